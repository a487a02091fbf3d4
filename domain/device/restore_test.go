package device

import (
	"fmt"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

func TestStartReconnectsSlotsWithSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	created := h.clock.Now().Add(-time.Hour)
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1, CreatedAt: created}
	h.reg.slots["idle"] = domain.Slot{ID: "idle", CreatedAt: created}
	h.disk.putLinked("a", jid1)

	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := h.waitState("a", domain.StateConnected)
	if st.Identity.JID != jid1 || !st.CreatedAt.Equal(created) {
		t.Errorf("restored %+v", st)
	}
	if st := h.status("idle"); st.State != domain.StateDisconnected || st.LoggedIn {
		t.Errorf("idle slot %+v", st)
	}
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1", opened)
	}
}

// Start returns while connects are still under way, and at most
// RestoreConcurrency of them are in flight at once.
func TestStartRestoresConcurrentlyButBounded(t *testing.T) {
	t.Parallel()
	const devices, limit = 10, 3
	h := newHarness(t, func(c *Config) { c.RestoreConcurrency = limit })
	for i := range devices {
		id, jid := fmt.Sprintf("d%02d", i), fmt.Sprintf("62811111111%d:1@s.whatsapp.net", i)
		h.reg.slots[id] = domain.Slot{ID: id, JID: jid}
		h.disk.putLinked(id, jid)
	}
	gate := make(chan struct{})
	h.wa.connectGate = gate

	if err := h.svc.Start(t.Context()); err != nil { // must not wait for the gate
		t.Fatal(err)
	}
	for _, st := range h.svc.List(t.Context()) {
		if st.State != domain.StateConnecting {
			t.Errorf("%s is %s right after Start, want connecting", st.DeviceID, st.State)
		}
	}
	eventually(t, "the first connects to be in flight", func() bool {
		h.wa.mu.Lock()
		defer h.wa.mu.Unlock()
		return h.wa.connecting == limit
	})
	close(gate)
	for i := range devices {
		h.waitState(fmt.Sprintf("d%02d", i), domain.StateConnected)
	}
	h.wa.mu.Lock()
	maxConnecting := h.wa.maxConnecting
	h.wa.mu.Unlock()
	if maxConnecting != limit {
		t.Errorf("up to %d connects in flight, want at most (and reaching) %d", maxConnecting, limit)
	}
	if _, connects, _ := h.wa.totals(); connects != devices {
		t.Errorf("%d connects, want %d", connects, devices)
	}
}

func TestStartAdoptsOrphanSessions(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const (
		jidMarked  = "628111111111:1@s.whatsapp.net" // marker names a free slot
		jidTaken   = "628222222222:2@s.whatsapp.net" // marker names a slot with another session
		jidNoMark  = "628333333333:3@s.whatsapp.net" // no marker at all
		jidOwned   = "628444444444:4@s.whatsapp.net"
		jidNewSlot = "628555555555:5@s.whatsapp.net" // marker names no slot
	)
	h.reg.slots["free"] = domain.Slot{ID: "free"}
	h.reg.slots["owner"] = domain.Slot{ID: "owner", JID: jidOwned}
	h.disk.putLinked("owner", jidOwned)
	h.disk.putLinked("free", jidMarked)
	h.disk.putLinked("owner", jidTaken)
	h.disk.putLinked("", jidNoMark)
	h.disk.putLinked("fresh", jidNewSlot)

	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"free":                          jidMarked,
		"owner":                         jidOwned,
		"628222222222-2-s.whatsapp.net": jidTaken,
		"628333333333-3-s.whatsapp.net": jidNoMark,
		"fresh":                         jidNewSlot,
	}
	for id, jid := range want {
		if sl, ok := h.reg.get(id); !ok || sl.JID != jid {
			t.Errorf("registry slot %s = %+v (present %v), want jid %s", id, sl, ok, jid)
		}
		st := h.waitState(id, domain.StateConnected)
		if st.Identity.JID != jid {
			t.Errorf("device %s connected as %q, want %s", id, st.Identity.JID, jid)
		}
	}
	if n := len(h.svc.List(t.Context())); n != len(want) {
		t.Errorf("%d devices, want %d", n, len(want))
	}
	if n := len(h.disk.paths()); n != len(want) {
		t.Errorf("%d sessions on disk, want %d: nothing is deleted", n, len(want))
	}
}

func TestStartFinishesOrDiscardsCutOffPairings(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.slots["linked"] = domain.Slot{ID: "linked"}
	h.reg.slots["unlinked"] = domain.Slot{ID: "unlinked"}
	id := identityOf(jid1)
	pairedPath := h.disk.putPairing("linked", &id)
	unpairedPath := h.disk.putPairing("unlinked", nil)

	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if h.disk.has(unpairedPath) {
		t.Error("an unpaired, cut-off pairing was kept")
	}
	if h.disk.has(pairedPath) || !h.disk.has(h.disk.key(jid1)) {
		t.Errorf("the paired pairing was not promoted: %v", h.disk.paths())
	}
	if sl, _ := h.reg.get("linked"); sl.JID != jid1 {
		t.Errorf("slot %+v, want jid %s", sl, jid1)
	}
	h.waitState("linked", domain.StateConnected)
	if st := h.status("unlinked"); st.State != domain.StateDisconnected || st.LoggedIn {
		t.Errorf("unlinked slot %+v", st)
	}
	// Only the restored device keeps a client; the inspections were closed.
	if _, open, _ := h.wa.counts(); open != 1 {
		t.Errorf("%d clients open, want 1", open)
	}
}

func TestStartSlotWithMissingSession(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.slots["gone"] = domain.Slot{ID: "gone", JID: jid1}
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := h.status("gone")
	if st.State != domain.StateLoggedOut || st.LoggedIn || st.LastError == "" {
		t.Errorf("status %+v, want logged_out with a reason", st)
	}
	if sl, _ := h.reg.get("gone"); sl.JID != "" {
		t.Errorf("registry still names the lost session: %+v", sl)
	}
	if n, _, _ := h.wa.counts(); n != 0 {
		t.Errorf("%d clients opened for a missing session", n)
	}
}

// A session whatsmeow emptied before the crash (logged out remotely) is
// dropped at restore, and the device waits for a new login.
func TestStartSessionNoLongerLinked(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.slots["d"] = domain.Slot{ID: "d", JID: jid1}
	h.disk.putLinked("d", jid1)
	h.disk.setIdentity(h.disk.key(jid1), nil)
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	h.waitFor("d", "the dead session to be dropped", func(st domain.Status) bool {
		return st.State == domain.StateLoggedOut && !st.LoggedIn
	})
	if paths := h.disk.paths(); len(paths) != 0 {
		t.Errorf("sessions left: %v", paths)
	}
	if _, err := h.svc.LoginQR(t.Context(), "d"); err != nil {
		t.Errorf("login after the dead session: %v", err)
	}
}

func TestStartConnectFailureRecorded(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.reg.slots["d"] = domain.Slot{ID: "d", JID: jid1}
	h.disk.putLinked("d", jid1)
	h.wa.connectErr = errBoom
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	st := h.waitState("d", domain.StateOffline)
	if st.LastError == "" || !st.LoggedIn || st.Reason != domain.ReasonConnectFailed {
		t.Errorf("status %+v, want the session kept and the failure recorded", st)
	}
}

// Close during a restore whose connects hang returns, and leaves nothing
// running.
func TestCloseDuringRestore(t *testing.T) {
	t.Parallel()
	h := newHarness(t, func(c *Config) { c.RestoreConcurrency = 1 })
	for i := range 3 {
		id, jid := fmt.Sprintf("d%d", i), fmt.Sprintf("62811111111%d:1@s.whatsapp.net", i)
		h.reg.slots[id] = domain.Slot{ID: id, JID: jid}
		h.disk.putLinked(id, jid)
	}
	h.wa.connectGate = make(chan struct{})
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a connect in flight", func() bool {
		h.wa.mu.Lock()
		defer h.wa.mu.Unlock()
		return h.wa.connecting == 1
	})
	_ = h.svc.Close()
	if _, open, _ := h.wa.counts(); open != 0 {
		t.Errorf("%d clients open after Close", open)
	}
	if _, connects, _ := h.wa.totals(); connects != 1 {
		t.Errorf("%d connects, want the restore to stop after the first", connects)
	}
}
