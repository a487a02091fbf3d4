package device

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

func TestCreateGetList(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	st, err := h.svc.Create(t.Context(), "b")
	if err != nil {
		t.Fatal(err)
	}
	if st.DeviceID != "b" || st.State != domain.StateDisconnected || st.LoggedIn || !st.CreatedAt.Equal(h.clock.Now()) {
		t.Errorf("created %+v", st)
	}
	_, err = h.svc.Create(t.Context(), "b")
	wantCode(t, err, domain.ECONFLICT)
	_, err = h.svc.Create(t.Context(), "../etc")
	wantCode(t, err, domain.EINVALID)

	gen, err := h.svc.Create(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(gen.DeviceID, "device-") || domain.ValidateDeviceID(gen.DeviceID) != nil {
		t.Errorf("generated id %q", gen.DeviceID)
	}
	if _, err := h.svc.Create(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, st := range h.svc.List(t.Context()) {
		ids = append(ids, st.DeviceID)
	}
	if want := []string{"a", "b", gen.DeviceID}; strings.Join(ids, ",") != strings.Join(want, ",") {
		t.Errorf("List ids %v, want %v", ids, want)
	}
	if got := h.svc.CountByState(); got[string(domain.StateDisconnected)] != 3 {
		t.Errorf("CountByState %v", got)
	}
	_, err = h.svc.Get(t.Context(), "zzz")
	wantCode(t, err, domain.ENOTFOUND)
	_, err = h.svc.Get(t.Context(), "a/b")
	wantCode(t, err, domain.EINVALID)
	if n, _, _ := h.wa.counts(); n != 0 {
		t.Errorf("creating slots opened %d clients", n)
	}
}

func TestDeleteLinkedDeviceUnlinks(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)
	warning, err := h.svc.Delete(t.Context(), "d")
	if err != nil || warning != "" {
		t.Fatalf("Delete = %q, %v", warning, err)
	}
	if _, _, l, _ := c.calls(); l != 1 {
		t.Errorf("Logout called %d times", l)
	}
	if _, ok := h.reg.get("d"); ok {
		t.Error("slot still in the registry")
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
	_, err = h.svc.Get(t.Context(), "d")
	wantCode(t, err, domain.ENOTFOUND)
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
}

// A caller that hangs up does not leave a device half deleted: the unlink
// and the removal finish anyway.
func TestDeleteFinishesWhenTheCallerHangsUp(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	c := h.link("d", jid1)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := h.svc.Delete(ctx, "d"); err != nil {
		t.Fatalf("Delete with a cancelled request: %v", err)
	}
	if _, _, l, _ := c.calls(); l != 1 {
		t.Errorf("Logout called %d times", l)
	}
	if _, ok := h.reg.get("d"); ok {
		t.Error("slot still in the registry")
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
}

// When WhatsApp cannot be reached the device is deleted here anyway, with a
// warning that the phone may still list it.
func TestDeleteUnlinksBestEffort(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("d", jid1)
	h.wa.logoutErr = errUnreachable
	warning, err := h.svc.Delete(t.Context(), "d")
	if err != nil {
		t.Fatal(err)
	}
	if warning == "" {
		t.Error("no warning although WhatsApp did not confirm the unlink")
	}
	if _, ok := h.reg.get("d"); ok {
		t.Error("slot kept")
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
}

func TestDeletePairingDevice(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Delete(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients left open", open)
	}
	// The id is free again.
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login after delete: %v", err)
	}
}

// Deletes racing with logins on one id: every client opened is closed by
// the end, and no device is left running outside the service's map (Close
// would then wait for it forever, and goleak would see its loop).
func TestDeleteRacingLogin(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			if i%2 == 0 {
				_, _ = h.svc.LoginQR(t.Context(), "d")
			} else {
				_, _ = h.svc.Delete(t.Context(), "d")
			}
		})
	}
	wg.Wait()
	_, _ = h.svc.Delete(t.Context(), "d")
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients still open after the device was deleted", open)
	}
	closed := make(chan struct{})
	go func() { _ = h.svc.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("Close hung: a deleted device's loop is still running")
	}
}

func TestCloseStopsEverything(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	h.link("a", jid1)
	if _, err := h.svc.LoginQR(t.Context(), "b"); err != nil {
		t.Fatal(err)
	}
	h.wa.connectGate = make(chan struct{}) // a reconnect that never finishes
	reconnected := make(chan struct{})
	go func() {
		defer close(reconnected)
		_, _ = h.svc.Reconnect(t.Context(), "a")
	}()
	eventually(t, "the reconnect to hang", func() bool {
		h.wa.mu.Lock()
		defer h.wa.mu.Unlock()
		return h.wa.connecting == 1
	})

	if err := h.svc.Close(); err != nil {
		t.Fatal(err)
	}
	<-reconnected
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients open after Close", open)
	}
	// The linked session stays for the next start; the pairing does not.
	if paths := h.disk.paths(); len(paths) != 1 || paths[0] != h.disk.key(jid1) {
		t.Errorf("sessions after Close: %v", paths)
	}
	// Nothing opens after Close.
	_, err := h.svc.LoginQR(t.Context(), "c")
	wantCode(t, err, domain.EUNAVAILABLE)
	_, err = h.svc.Reconnect(t.Context(), "a")
	wantCode(t, err, domain.EUNAVAILABLE)
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients opened after Close", open)
	}
	if err := h.svc.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestCloseWakesWaitingLogin(t *testing.T) {
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
	_ = h.svc.Close()
	select {
	case err := <-errc:
		wantCode(t, err, domain.EUNAVAILABLE)
	case <-time.After(waitLimit):
		t.Fatal("LoginQR still waiting after Close")
	}
}
