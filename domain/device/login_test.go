package device

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

func TestLoginQRCreatesSlotAndShowsFirstCode(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)

	qr, err := h.svc.LoginQR(t.Context(), "phone1")
	if err != nil {
		t.Fatalf("LoginQR: %v", err)
	}
	c := h.wa.last(t)
	if want := c.path + "#1"; qr.Text != want {
		t.Errorf("QR text %q, want %q", qr.Text, want)
	}
	if want := h.clock.Now().Add(20 * time.Second); !qr.ExpiresAt.Equal(want) {
		t.Errorf("QR expires at %v, want %v", qr.ExpiresAt, want)
	}
	if _, ok := h.reg.get("phone1"); !ok {
		t.Error("the slot was not saved in the registry")
	}
	st := h.status("phone1")
	if st.State != domain.StatePairing || st.Pairing == nil || st.Pairing.Method != domain.PairingQR || st.Pairing.QR != qr.Text {
		t.Errorf("status %+v, want pairing by QR showing %q", st, qr.Text)
	}
	if st.LoggedIn {
		t.Error("a pairing device reports logged_in")
	}
}

func TestLoginQRRejectsBadDeviceID(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	for _, id := range []string{"", "-x", "a/b", "a b", string(make([]byte, 65))} {
		_, err := h.svc.LoginQR(t.Context(), id)
		wantCode(t, err, domain.EINVALID)
	}
	if n, _, _ := h.wa.counts(); n != 0 {
		t.Errorf("%d clients opened for bad ids", n)
	}
}

// Twenty logins racing on one device share one connection and one QR code:
// the bug this gateway exists to fix is a second login tearing down the
// pairing in progress.
func TestLoginQRConcurrentCallsShareOnePairing(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) {})
	h.wa.startQRGate = make(chan struct{}) // hold the first StartQR so the others pile up

	const n = 20
	var wg sync.WaitGroup
	qrs := make([]QR, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { qrs[i], errs[i] = h.svc.LoginQR(t.Context(), "d") })
	}
	c := h.wa.nth(t, 1)
	eventually(t, "StartQR to be called", func() bool { s, _, _, _ := c.calls(); return s == 1 })
	close(h.wa.startQRGate)
	wg.Wait()

	for i := range n {
		if errs[i] != nil {
			t.Fatalf("call %d: %v", i, errs[i])
		}
		if qrs[i] != qrs[0] {
			t.Errorf("call %d got %+v, call 0 got %+v", i, qrs[i], qrs[0])
		}
	}
	opened, open, maxOpen := h.wa.counts()
	startQR, _, _ := h.wa.totals()
	if opened != 1 || open != 1 || maxOpen != 1 || startQR != 1 {
		t.Errorf("opened %d clients (%d open, at most %d), StartQR called %d times; want one of each", opened, open, maxOpen, startQR)
	}
}

func TestLoginQRReturnsCurrentCodeAfterRotation(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	first, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	c := h.wa.last(t)

	h.clock.Advance(20 * time.Second)
	code := c.showQR()
	h.waitFor("d", "the second code", func(st domain.Status) bool { return st.Pairing != nil && st.Pairing.QR == code })

	again, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if again.Text != code || again.Text == first.Text {
		t.Errorf("after rotation got %q, want the new code %q (first was %q)", again.Text, code, first.Text)
	}
	if want := h.clock.Now().Add(20 * time.Second); !again.ExpiresAt.Equal(want) {
		t.Errorf("expires at %v, want %v", again.ExpiresAt, want)
	}
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1", opened)
	}
}

func TestLoginQRSeriesRunsOutThenStartsAfresh(t *testing.T) {
	t.Parallel()
	var outcomes []string
	var mu sync.Mutex
	h := startedHarness(t, func(c *Config) {
		c.OnLogin = func(m domain.PairingMethod, outcome string) {
			mu.Lock()
			outcomes = append(outcomes, string(m)+":"+outcome)
			mu.Unlock()
		}
	})
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	first := h.wa.last(t)
	pairingPath := first.path

	first.emit(domain.PairingExpired{})
	st := h.waitState("d", domain.StateDisconnected)
	if st.Pairing != nil || st.LastError == "" {
		t.Errorf("after expiry: %+v, want no pairing and a recorded reason", st)
	}
	if !first.isClosed() {
		t.Error("the expired pairing's client was left open")
	}
	if h.disk.has(pairingPath) {
		t.Error("the expired pairing's temporary session was kept")
	}

	qr, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	second := h.wa.last(t)
	if second == first || qr.Text != second.path+"#1" {
		t.Errorf("second login got %q on client %p; want a fresh pairing (first client %p)", qr.Text, second, first)
	}
	if _, open, maxOpen := h.wa.counts(); open != 1 || maxOpen != 1 {
		t.Errorf("%d clients open (at most %d), want 1", open, maxOpen)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outcomes) != 1 || outcomes[0] != "qr:expired" {
		t.Errorf("login outcomes %v, want [qr:expired]", outcomes)
	}
}

// A pairing that ends before its first QR code (the pre-login connection
// closed) answers the waiting login at once, not after LoginWait.
func TestLoginQRPairingEndsBeforeFirstCode(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) { c.LoginWait = time.Hour })
	h.wa.noAutoQR = true

	errc := make(chan error, 1)
	go func() {
		_, err := h.svc.LoginQR(t.Context(), "d")
		errc <- err
	}()
	c := h.wa.nth(t, 1)
	eventually(t, "StartQR", func() bool { s, _, _, _ := c.calls(); return s == 1 })
	c.emit(domain.PairingExpired{})
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("LoginQR succeeded without a QR code")
		}
		if domain.ErrorCode(err) == domain.EINTERNAL {
			t.Errorf("error %v is internal", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("LoginQR kept waiting after the pairing ended")
	}
}

func TestLoginQRTimesOutWithoutCode(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) { c.LoginWait = 20 * time.Millisecond })
	h.wa.noAutoQR = true
	_, err := h.svc.LoginQR(t.Context(), "d")
	wantCode(t, err, domain.ETIMEOUT)
	// The pairing itself goes on: a later call can still get the code.
	code := h.wa.last(t).showQR()
	h.waitFor("d", "the late code", func(st domain.Status) bool { return st.Pairing != nil && st.Pairing.QR == code })
	qr, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil || qr.Text != code {
		t.Errorf("LoginQR = %q, %v; want %q", qr.Text, err, code)
	}
}

func TestLoginQRStartFailure(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.wa.startQRErr = errBoom
	_, err := h.svc.LoginQR(t.Context(), "d")
	wantCode(t, err, domain.EUNAVAILABLE)
	st := h.status("d")
	if st.State != domain.StateDisconnected || st.Pairing != nil {
		t.Errorf("status %+v, want disconnected without pairing", st)
	}
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left on disk: %v", paths)
	}
}

func TestLoginOnLoggedInDeviceConflicts(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("d", "628123456789:12@s.whatsapp.net")
	opened, _, _ := h.wa.counts()

	_, err := h.svc.LoginQR(t.Context(), "d")
	wantCode(t, err, domain.ECONFLICT)
	_, err = h.svc.LoginCode(t.Context(), "d", "628123456789")
	wantCode(t, err, domain.ECONFLICT)
	if again, _, _ := h.wa.counts(); again != opened {
		t.Errorf("a login on a logged-in device opened %d clients", again-opened)
	}
	if st := h.status("d"); st.State != domain.StateConnected {
		t.Errorf("state %s after refused logins, want connected", st.State)
	}
}

func TestLoginCode(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	pc, err := h.svc.LoginCode(t.Context(), "d", "+628123456789")
	if err != nil {
		t.Fatal(err)
	}
	c := h.wa.last(t)
	if pc.Code != "CODE-0001" {
		t.Errorf("code %q", pc.Code)
	}
	if want := h.clock.Now().Add(fakeCodeLife); !pc.ExpiresAt.Equal(want) {
		t.Errorf("expires at %v, want %v (the client's expiry)", pc.ExpiresAt, want)
	}
	c.mu.Lock()
	calls := append([]string(nil), c.pairCodes...)
	c.mu.Unlock()
	if len(calls) != 1 || calls[0] != "628123456789|Chrome (Linux)" {
		t.Errorf("PairCode calls %q, want the digits and the configured display name", calls)
	}
	if s, _, _, _ := c.calls(); s != 1 {
		t.Errorf("StartQR called %d times before PairCode, want 1", s)
	}
	st := h.status("d")
	if st.State != domain.StatePairing || st.Pairing == nil || st.Pairing.Method != domain.PairingCode || st.Pairing.Code != pc.Code {
		t.Errorf("status %+v, want pairing by code %q", st, pc.Code)
	}

	// The same phone again gets the same code, without asking WhatsApp.
	again, err := h.svc.LoginCode(t.Context(), "d", "628123456789")
	if err != nil || again != pc {
		t.Errorf("repeat = %+v, %v; want %+v", again, err, pc)
	}
	// Another phone must wait.
	_, err = h.svc.LoginCode(t.Context(), "d", "628999999999")
	wantCode(t, err, domain.ECONFLICT)
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1", opened)
	}

	// Linking by code ends like linking by QR.
	c.pair("628123456789:3@s.whatsapp.net")
	h.waitState("d", domain.StateConnected)
}

func TestLoginCodeValidatesPhone(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	for _, phone := range []string{"", "123", "+", "62812345678901234", "62-812345678", "0812345678", "++628123456789", "62812345678a"} {
		_, err := h.svc.LoginCode(t.Context(), "d", phone)
		wantCode(t, err, domain.EINVALID)
	}
	if n, _, _ := h.wa.counts(); n != 0 {
		t.Errorf("%d clients opened for bad phones", n)
	}
	if _, err := h.svc.Get(t.Context(), "d"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("a bad phone created the slot: %v", err)
	}
}

// A code login joins a QR pairing under way instead of opening another
// connection.
func TestLoginCodeJoinsQRPairing(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.LoginCode(t.Context(), "d", "628123456789"); err != nil {
		t.Fatal(err)
	}
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1", opened)
	}
	if st := h.status("d"); st.Pairing == nil || st.Pairing.Method != domain.PairingCode {
		t.Errorf("status %+v, want pairing by code", st)
	}
}

// WhatsApp refusing the number (EINVALID from the adapter) must not leave
// a half-made code pairing that blocks the next attempt with a conflict.
func TestLoginCodeRefusedNumberDoesNotBlockNextAttempt(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.wa.pairCodeErr = func(phone string) error {
		if phone == "628000000000" {
			return domain.Errorf(domain.EINVALID, "phone is not on WhatsApp")
		}
		return nil
	}
	_, err := h.svc.LoginCode(t.Context(), "d", "628000000000")
	wantCode(t, err, domain.EINVALID)
	if _, err := h.svc.LoginCode(t.Context(), "d", "628123456789"); err != nil {
		t.Fatalf("second attempt with a good number: %v", err)
	}
	if _, open, maxOpen := h.wa.counts(); open != 1 || maxOpen != 1 {
		t.Errorf("%d clients open (at most %d), want 1", open, maxOpen)
	}
}

// A refused number leaves a QR pairing it joined alone.
func TestLoginCodeRefusedNumberKeepsQRPairing(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.wa.pairCodeErr = func(string) error { return domain.Errorf(domain.EINVALID, "phone is not on WhatsApp") }
	qr, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.LoginCode(t.Context(), "d", "628000000000")
	wantCode(t, err, domain.EINVALID)
	again, err := h.svc.LoginQR(t.Context(), "d")
	if err != nil || again.Text != qr.Text {
		t.Errorf("LoginQR after a refused code = %+v, %v; want the same pairing %q", again, err, qr.Text)
	}
}

func TestLoginCodeFailureIsUnavailable(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.wa.pairCodeErr = func(string) error { return errBoom }
	_, err := h.svc.LoginCode(t.Context(), "d", "628123456789")
	wantCode(t, err, domain.EUNAVAILABLE)
	if !errors.Is(err, errBoom) {
		t.Errorf("error %v does not carry its cause", err)
	}
	if st := h.status("d"); st.State != domain.StateDisconnected || st.Pairing != nil {
		t.Errorf("status %+v, want disconnected", st)
	}
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
}

// Once the code has expired (before WhatsApp's own timeout arrives) a new
// request starts afresh instead of being refused as another phone's.
func TestLoginCodeAfterExpiryStartsAfresh(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	first, err := h.svc.LoginCode(t.Context(), "d", "628123456789")
	if err != nil {
		t.Fatal(err)
	}
	h.clock.Advance(fakeCodeLife)
	second, err := h.svc.LoginCode(t.Context(), "d", "628123456789")
	if err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if !second.ExpiresAt.After(first.ExpiresAt) {
		t.Errorf("second code expires %v, not after the first's %v", second.ExpiresAt, first.ExpiresAt)
	}
	if opened, open, maxOpen := h.wa.counts(); opened != 2 || open != 1 || maxOpen != 1 {
		t.Errorf("opened %d, open %d, at most %d; want a second pairing replacing the first", opened, open, maxOpen)
	}
}

func TestLoginCancelledByCallerContext(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.wa.noAutoQR = true
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := h.svc.LoginQR(ctx, "d")
		errc <- err
	}()
	c := h.wa.nth(t, 1)
	eventually(t, "StartQR", func() bool { s, _, _, _ := c.calls(); return s == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("LoginQR after cancel: %v", err)
	}
	// The pairing lives on the device's context, not the request's.
	code := c.showQR()
	h.waitFor("d", "the code", func(st domain.Status) bool { return st.Pairing != nil && st.Pairing.QR == code })
	if c.isClosed() || c.ctx.Err() != nil {
		t.Error("the pairing died with the HTTP request")
	}
}
