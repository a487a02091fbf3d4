package device

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

const jid1 = "628123456789:12@s.whatsapp.net"

func TestPairedPromotesSessionAndConnects(t *testing.T) {
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
	h.wa.noAutoConnect = true
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	pairing := h.wa.last(t)
	pairing.pair(jid1)

	st := h.waitState("d", domain.StateConnecting)
	if !st.LoggedIn || st.Identity.JID != jid1 || st.Identity.Phone != "628123456789" || st.Pairing != nil {
		t.Errorf("after Paired: %+v", st)
	}
	if !pairing.isClosed() {
		t.Error("the pairing client was not closed")
	}
	if h.disk.has(pairing.path) {
		t.Error("the temporary session is still there")
	}
	if !h.disk.has(h.disk.key(jid1)) {
		t.Errorf("no session at %s; disk has %v", h.disk.key(jid1), h.disk.paths())
	}
	if sl, _ := h.reg.get("d"); sl.JID != jid1 {
		t.Errorf("registry slot %+v, want jid %s", sl, jid1)
	}
	conn := h.wa.nth(t, 2)
	if conn.path != h.disk.key(jid1) {
		t.Errorf("connected on %s, want the promoted path", conn.path)
	}
	eventually(t, "Connect", func() bool { _, c, _, _ := conn.calls(); return c == 1 })

	conn.emit(domain.Connected{})
	st = h.waitState("d", domain.StateConnected)
	if !st.Connected || st.Identity.PushName != "Ana" || st.Identity.Platform != "android" {
		t.Errorf("after Connected: %+v", st)
	}
	if _, open, maxOpen := h.wa.counts(); open != 1 || maxOpen != 1 {
		t.Errorf("%d clients open, at most %d; want 1", open, maxOpen)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(outcomes) != 1 || outcomes[0] != "qr:success" {
		t.Errorf("login outcomes %v", outcomes)
	}
}

func TestPairedButPromoteFails(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.disk.promoteErr = errBoom
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.wa.last(t).pair(jid1)
	st := h.waitState("d", domain.StateDisconnected)
	if st.LoggedIn || st.LastError == "" {
		t.Errorf("status %+v, want not logged in with a reason", st)
	}
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
}

func TestPairingFailed(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.wa.last(t).emit(domain.PairingFailed{Reason: "bad signature"})
	st := h.waitState("d", domain.StateDisconnected)
	if !contains(st.LastError, "bad signature") {
		t.Errorf("last error %q does not say why", st.LastError)
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)

	st, err := h.svc.Logout(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != domain.StateLoggedOut || st.Reason != domain.ReasonLogout || st.LoggedIn || st.Identity != (domain.Identity{}) {
		t.Errorf("after logout: %+v", st)
	}
	if _, _, l, _ := c.calls(); l != 1 {
		t.Errorf("client Logout called %d times, want 1", l)
	}
	if !c.isClosed() {
		t.Error("client not closed")
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
	sl, ok := h.reg.get("d")
	if !ok || sl.JID != "" || sl.Ended != domain.ReasonLogout {
		t.Errorf("slot %+v (present %v), want kept without jid, ended by logout", sl, ok)
	}
	// Logging out again changes nothing and is no error; logging in again
	// works.
	if st, err := h.svc.Logout(t.Context(), "d"); err != nil || st.State != domain.StateLoggedOut {
		t.Errorf("second logout: %+v, %v", st, err)
	}
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login after logout: %v", err)
	}
}

func TestLogoutUnknownDevice(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	_, err := h.svc.Logout(t.Context(), "nobody")
	wantCode(t, err, domain.ENOTFOUND)
	_, err = h.svc.Reconnect(t.Context(), "nobody")
	wantCode(t, err, domain.ENOTFOUND)
	_, err = h.svc.Delete(t.Context(), "nobody")
	wantCode(t, err, domain.ENOTFOUND)
}

func TestLogoutCancelsPairing(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	st, err := h.svc.Logout(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != domain.StateDisconnected || st.Pairing != nil {
		t.Errorf("status %+v", st)
	}
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
}

func TestLogoutWhatsAppUnreachableKeepsSession(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("d", jid1)
	h.wa.logoutErr = errUnreachable
	_, err := h.svc.Logout(t.Context(), "d")
	wantCode(t, err, domain.EUNAVAILABLE)
	if st := h.status("d"); !st.LoggedIn {
		t.Errorf("session dropped although WhatsApp did not confirm: %+v", st)
	}
	if !h.disk.has(h.disk.key(jid1)) {
		t.Error("session files deleted")
	}
}

// A fault in the adapter itself is not reported as WhatsApp being away.
func TestLogoutInternalFaultStaysInternal(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("d", jid1)
	h.wa.logoutErr = errBoom
	_, err := h.svc.Logout(t.Context(), "d")
	wantCode(t, err, domain.EINTERNAL)
	if st := h.status("d"); !st.LoggedIn {
		t.Errorf("session dropped after a failed logout: %+v", st)
	}
}

// An offline device is connected first so that WhatsApp can unlink it.
func TestLogoutOfflineDeviceConnectsFirst(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)
	c.emit(domain.Offline{Reason: domain.ReasonStreamReplaced})
	h.waitState("d", domain.StateOffline)

	if _, err := h.svc.Logout(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	last := h.wa.last(t)
	if last == c {
		t.Fatal("no new connection was made to unlink")
	}
	if _, conn, l, _ := last.calls(); conn != 1 || l != 1 {
		t.Errorf("new client: %d connects, %d logouts; want 1 and 1", conn, l)
	}
	if _, open, maxOpen := h.wa.counts(); open != 0 || maxOpen != 1 {
		t.Errorf("%d open, at most %d", open, maxOpen)
	}
}

func TestLogoutOfflineDeviceTimesOut(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) { c.UnlinkWait = 10 * time.Millisecond })
	c := h.link("d", jid1)
	h.wa.noAutoConnect = true
	c.emit(domain.Disconnected{})
	h.waitState("d", domain.StateConnecting)
	c.emit(domain.Offline{Reason: domain.ReasonRefused, Detail: "network"})
	h.waitState("d", domain.StateOffline)

	_, err := h.svc.Logout(t.Context(), "d")
	wantCode(t, err, domain.EUNAVAILABLE)
	if st := h.status("d"); !st.LoggedIn {
		t.Error("the session was dropped")
	}
}

func TestLoggedOutByServer(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)

	c.emit(domain.LoggedOut{Reason: domain.ReasonRemovedOnPhone, Detail: "device removed"})
	st := h.waitFor("d", "the session to be dropped", func(st domain.Status) bool {
		return st.State == domain.StateLoggedOut && !st.LoggedIn
	})
	if !contains(st.LastError, "device removed") || st.Reason != domain.ReasonRemovedOnPhone {
		t.Errorf("reason %q, last error %q: the reason is not recorded", st.Reason, st.LastError)
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("session files left: %v", paths)
	}
	if sl, ok := h.reg.get("d"); !ok || sl.JID != "" || sl.Ended != domain.ReasonRemovedOnPhone {
		t.Errorf("slot %+v (present %v), want kept without jid, ended removed_on_phone", sl, ok)
	}
	if !c.isClosed() {
		t.Error("client not closed")
	}
	// The slot is ready for a new login.
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login after being logged out: %v", err)
	}
}

func TestStreamReplacedStopsWithoutFighting(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)
	_, connects, _, _ := c.calls()

	c.emit(domain.Offline{Reason: domain.ReasonStreamReplaced, Detail: "stream replaced: another connection took over this session"})
	st := h.waitState("d", domain.StateOffline)
	if !contains(st.LastError, "stream replaced") || st.Reason != domain.ReasonStreamReplaced {
		t.Errorf("reason %q, last error %q", st.Reason, st.LastError)
	}
	if !st.LoggedIn {
		t.Error("the session was dropped; stream replaced keeps it")
	}
	eventually(t, "Disconnect", func() bool { _, _, _, d := c.calls(); return d == 1 })
	// Whatever the client reports next, nothing reconnects.
	c.emit(domain.Disconnected{})
	h.settle("d")
	if st := h.status("d"); st.State != domain.StateOffline {
		t.Errorf("state %s after a Disconnected following StreamReplaced", st.State)
	}
	opened, _, _ := h.wa.counts()
	_, again, _, _ := c.calls()
	if opened != 2 || again != connects {
		t.Errorf("opened %d clients, %d connects after the replacement; want no new connection", opened, again-connects)
	}
	// Sending is refused until someone reconnects on purpose.
	_, _, err := h.svc.Send(t.Context(), "d", "628111111111", "hi")
	wantCode(t, err, domain.ECONFLICT)
	if _, err := h.svc.Reconnect(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.waitState("d", domain.StateConnected)
}

func TestDisconnectedMeansConnecting(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)
	c.emit(domain.Disconnected{})
	st := h.waitState("d", domain.StateConnecting)
	if st.LastError == "" || !st.LoggedIn {
		t.Errorf("status %+v", st)
	}
	c.emit(domain.Connected{})
	h.waitState("d", domain.StateConnected)
	if opened, _, _ := h.wa.counts(); opened != 2 {
		t.Errorf("%d clients opened; the client reconnects by itself", opened)
	}
}

func TestFailureEventsRecorded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		ev   domain.Event
		want string
	}{
		{domain.Offline{Reason: domain.ReasonTemporaryBan, Detail: "temporarily banned by WhatsApp (code 101) for 1h0m0s"}, "temporarily banned by WhatsApp (code 101) for 1h0m0s"},
		{domain.Offline{Reason: domain.ReasonClientOutdated}, "client_outdated"},
		{domain.Offline{Reason: domain.ReasonRefused, Detail: "internal server error"}, "internal server error"},
	} {
		t.Run(contains2(tc.want), func(t *testing.T) {
			t.Parallel()
			h := startedHarness(t)
			c := h.link("d", jid1)
			c.emit(tc.ev)
			st := h.waitState("d", domain.StateOffline)
			if !contains(st.LastError, tc.want) || st.Reason != tc.ev.(domain.Offline).Reason {
				t.Errorf("last error %q, want it to contain %q", st.LastError, tc.want)
			}
			if !st.LoggedIn {
				t.Error("the session was dropped")
			}
		})
	}
}

func contains2(s string) string { return s[:min(len(s), 20)] }

// Events from a client the device has since closed change nothing.
func TestStaleEventsIgnored(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	old := h.link("d", jid1)
	if _, err := h.svc.Reconnect(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.waitState("d", domain.StateConnected)
	for _, ev := range []domain.Event{
		domain.LoggedOut{}, domain.Offline{Reason: domain.ReasonStreamReplaced}, domain.Offline{Reason: domain.ReasonRefused},
		domain.Disconnected{}, domain.QRCode{Code: "stale"},
	} {
		old.deliverLate(ev)
	}
	h.settle("d")
	if st := h.status("d"); st.State != domain.StateConnected || !st.LoggedIn {
		t.Errorf("stale events changed the device: %+v", st)
	}
}

func TestReconnect(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	_, err := h.svc.Create(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Reconnect(t.Context(), "d")
	wantCode(t, err, domain.ECONFLICT)

	old := h.link("d", jid1)
	if _, err := h.svc.Reconnect(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.waitState("d", domain.StateConnected)
	if !old.isClosed() {
		t.Error("the old client was left open")
	}
	if _, open, maxOpen := h.wa.counts(); open != 1 || maxOpen != 1 {
		t.Errorf("%d open, at most %d", open, maxOpen)
	}

	if _, err := h.svc.LoginQR(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.Reconnect(t.Context(), "p")
	wantCode(t, err, domain.ECONFLICT)
}

// Fifty goroutines logging in, out and reconnecting one device, while the
// phone scans and WhatsApp drops it, never leave it two open clients.
func TestConcurrentLifecycleNeverOpensTwoClients(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) { c.UnlinkWait = 50 * time.Millisecond; c.LoginWait = time.Second })
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			for j := range 6 {
				switch (i + j) % 5 {
				case 0, 1:
					_, _ = h.svc.LoginQR(ctx, "d")
				case 2:
					_, _ = h.svc.Logout(ctx, "d")
				case 3:
					_, _ = h.svc.Reconnect(ctx, "d")
				case 4:
					// The phone scans whatever is on show, or WhatsApp
					// drops the connection.
					if cs := h.wa.opened(); len(cs) > 0 {
						c := cs[len(cs)-1]
						if _, paired := c.Identity(); !paired {
							c.pair(jid1)
						} else {
							c.emit(domain.Disconnected{})
						}
					}
				}
			}
		})
	}
	wg.Wait()
	opened, _, _ := h.wa.counts()
	startQR, connects, logouts := h.wa.totals()
	t.Logf("%d clients opened, %d StartQR, %d Connect, %d Logout", opened, startQR, connects, logouts)
	if _, _, maxOpen := h.wa.counts(); maxOpen > 1 {
		t.Errorf("up to %d clients were open at once, want at most 1", maxOpen)
	}
	// Once everything settles, at most one client is open, and it is the
	// device's.
	h.settle("d")
	d, _ := h.svc.lookup("d")
	_, open, _ := h.wa.counts()
	d.mu.Lock()
	gen := d.gen
	d.mu.Unlock()
	hasClient := d.clientOf(gen) != nil
	if open > 1 || (open == 1) != hasClient {
		t.Errorf("%d clients open; device has a client: %v", open, hasClient)
	}
}

func TestEventHandlersRunOnDeviceContext(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	ctx, cancel := context.WithCancel(t.Context())
	if _, err := h.svc.LoginQR(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	cancel() // the HTTP request is over
	c := h.wa.last(t)
	if c.ctx.Err() != nil {
		t.Fatal("the client was opened on the request's context")
	}
	c.pair(jid1)
	h.waitState("d", domain.StateConnected)
	if sl, _ := h.reg.get("d"); sl.JID != jid1 {
		t.Errorf("slot %+v: the registry update used a dead context", sl)
	}
}

// Files that cannot be removed: the logout says what failed, the device is
// logged out but keeps them, and the registry says so (the next start
// neither connects nor adopts them); a logout once the disk is fixed
// finishes the job. A delete that cannot remove them keeps the slot.
func TestSessionFilesThatCannotBeRemoved(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("d", jid1)
	h.disk.mu.Lock()
	h.disk.deleteErr = errors.New("read-only file system")
	h.disk.mu.Unlock()

	_, err := h.svc.Logout(t.Context(), "d")
	wantCode(t, err, domain.EUNAVAILABLE)
	if !contains(domain.ErrorMessage(err), "read-only file system") {
		t.Errorf("the error does not say what failed: %q", domain.ErrorMessage(err))
	}
	st := h.status("d")
	if st.State != domain.StateLoggedOut || st.Reason != domain.ReasonLogout || st.LoggedIn {
		t.Errorf("after the failed removal: %+v", st)
	}
	if sl, _ := h.reg.get("d"); sl.JID != jid1 || sl.Ended != domain.ReasonLogout {
		t.Errorf("registry slot %+v: want the files recorded as an ended session's", sl)
	}
	if _, err := h.svc.LoginQR(t.Context(), "d"); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("login over the files left: %v, want ECONFLICT", err)
	}
	_, err = h.svc.Delete(t.Context(), "d")
	wantCode(t, err, domain.EUNAVAILABLE)
	if _, ok := h.reg.get("d"); !ok {
		t.Fatal("the slot went although its files stayed")
	}

	h.disk.mu.Lock()
	h.disk.deleteErr = nil
	h.disk.mu.Unlock()
	if _, err := h.svc.Logout(t.Context(), "d"); err != nil {
		t.Fatalf("logout once fixed: %v", err)
	}
	if sl, _ := h.reg.get("d"); sl.JID != "" || sl.Ended != domain.ReasonLogout {
		t.Errorf("registry slot %+v after the files went", sl)
	}
	if h.disk.has(h.disk.key(jid1)) {
		t.Error("the session is still on disk")
	}
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login afterwards: %v", err)
	}
}

// A session that cannot be opened at start is logged_out/session_unreadable
// with its files kept; logout removes them at once.
func TestStartUnreadableSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.slots["d"] = domain.Slot{ID: "d", JID: jid1}
	h.disk.putLinked("d", jid1)
	h.wa.openErr = errors.New("file is not a database")
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := h.waitState("d", domain.StateLoggedOut)
	if st.Reason != domain.ReasonSessionUnreadable || st.LoggedIn {
		t.Errorf("status %+v", st)
	}
	h.settle("d") // the registry is written by a job
	if sl, _ := h.reg.get("d"); sl.Ended != domain.ReasonSessionUnreadable || sl.JID != jid1 {
		t.Errorf("registry slot %+v", sl)
	}
	h.wa.mu.Lock()
	h.wa.openErr = nil
	h.wa.mu.Unlock()
	st, err := h.svc.Logout(t.Context(), "d")
	if err != nil || st.State != domain.StateLoggedOut || st.Reason != domain.ReasonSessionUnreadable {
		t.Fatalf("logout: %+v, %v", st, err)
	}
	if h.disk.has(h.disk.key(jid1)) {
		t.Error("the unreadable session is still on disk")
	}
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login afterwards: %v", err)
	}
}
