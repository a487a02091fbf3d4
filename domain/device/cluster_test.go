package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

func clusterMode(c *Config) { c.Cluster = true }

// In cluster mode Start runs nothing: devices start as their leases come.
func TestClusterStartRestoresNothing(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clusterMode)
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1}
	h.disk.putLinked("a", jid1)
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := h.svc.List(t.Context()); len(got) != 0 {
		t.Fatalf("List after Start = %+v, want nothing", got)
	}
	if n, _, _ := h.wa.counts(); n != 0 {
		t.Fatalf("%d clients opened", n)
	}
	_, err := h.svc.Get(t.Context(), "a")
	wantCode(t, err, domain.ENOTFOUND)
}

// Adopt starts one slot as restore does: a session connects, a slot
// without one just exists, one whose session is missing is logged out.
func TestAdoptRestoresOneSlot(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, clusterMode)
	created := h.clock.Now().Add(-time.Hour)
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1, CreatedAt: created}
	h.reg.slots["idle"] = domain.Slot{ID: "idle", CreatedAt: created}
	h.reg.slots["lost"] = domain.Slot{ID: "lost", JID: "628333333333:1@s.whatsapp.net", CreatedAt: created}
	h.reg.slots["other"] = domain.Slot{ID: "other", JID: "628444444444:1@s.whatsapp.net", CreatedAt: created}
	h.disk.putLinked("a", jid1)
	h.disk.putLinked("other", "628444444444:1@s.whatsapp.net")

	for _, id := range []string{"a", "a", "idle", "lost"} { // twice: the second changes nothing
		if err := h.svc.Adopt(t.Context(), id); err != nil {
			t.Fatalf("Adopt(%s): %v", id, err)
		}
	}
	st := h.waitState("a", domain.StateConnected)
	if st.Identity.JID != jid1 || !st.CreatedAt.Equal(created) {
		t.Errorf("adopted %+v", st)
	}
	if st := h.status("idle"); st.State != domain.StateDisconnected || st.LoggedIn {
		t.Errorf("idle slot %+v", st)
	}
	if st := h.status("lost"); st.State != domain.StateLoggedOut || st.Reason != domain.ReasonSessionMissing {
		t.Errorf("slot with a missing session %+v", st)
	}
	if sl, _ := h.reg.get("lost"); sl.JID != "" || sl.Ended != domain.ReasonSessionMissing {
		t.Errorf("registry of the lost session: %+v", sl)
	}
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1 (only a's)", opened)
	}
	if got := len(h.svc.List(t.Context())); got != 3 {
		t.Errorf("%d devices run, want 3 (other was not adopted)", got)
	}
	wantCode(t, h.svc.Adopt(t.Context(), "nobody"), domain.ENOTFOUND)
	wantCode(t, h.svc.Adopt(t.Context(), "~webhooks"), domain.EINVALID)
}

// Drop stops a device without logging out; Adopt takes it back.
func TestDropKeepsTheSession(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, clusterMode)
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1}
	h.disk.putLinked("a", jid1)
	if err := h.svc.Adopt(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	h.waitState("a", domain.StateConnected)
	c := h.wa.last(t)

	if err := h.svc.Drop(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	if !c.isClosed() {
		t.Error("the client is still open after Drop")
	}
	if _, _, logouts := h.wa.totals(); logouts != 0 {
		t.Errorf("%d logouts: Drop must not log out", logouts)
	}
	if !h.disk.has(jid1) {
		t.Error("the session went with Drop")
	}
	if sl, _ := h.reg.get("a"); sl.JID != jid1 || sl.Ended != domain.ReasonNone {
		t.Errorf("registry after Drop: %+v", sl)
	}
	// Calls now are told to try again (elsewhere), never "not found", and
	// a login does not re-create the slot here.
	_, err := h.svc.Get(t.Context(), "a")
	wantCode(t, err, domain.EUNAVAILABLE)
	if !contains(err.Error(), "another replica") {
		t.Errorf("error %q does not say the device moved", err)
	}
	_, err = h.svc.LoginQR(t.Context(), "a")
	wantCode(t, err, domain.EUNAVAILABLE)
	_, _, err = h.svc.Send(t.Context(), "a", "628111111111", "hi")
	wantCode(t, err, domain.EUNAVAILABLE)
	if err := h.svc.Drop(t.Context(), "a"); err != nil { // again: nothing to do
		t.Fatal(err)
	}

	if err := h.svc.Adopt(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	h.waitState("a", domain.StateConnected)
	if opened, open, _ := h.wa.counts(); opened != 2 || open != 1 {
		t.Errorf("opened %d clients, %d open; want 2 and 1", opened, open)
	}
}

// A call waiting on a device when it is dropped is told to try again.
func TestDropCutsCallsInFlight(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, clusterMode, func(c *Config) { c.SendWait = time.Minute })
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1}
	h.disk.putLinked("a", jid1)
	h.wa.connectGate = make(chan struct{}) // a stays connecting
	if err := h.svc.Adopt(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		_, _, err := h.svc.Send(context.Background(), "a", "628111111111", "hi")
		sent <- err
	}()
	reconnected := make(chan error, 1)
	go func() {
		_, err := h.svc.Reconnect(context.Background(), "a")
		reconnected <- err
	}()
	eventually(t, "the send to wait for the device", func() bool {
		d, err := h.svc.lookup("a")
		if err != nil {
			return false
		}
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.pub.State == domain.StateConnecting
	})
	if err := h.svc.Drop(t.Context(), "a"); err != nil {
		t.Fatal(err)
	}
	for name, ch := range map[string]chan error{"Send": sent, "Reconnect": reconnected} {
		select {
		case err := <-ch:
			if err != nil { // Reconnect may have been answered before the drop
				wantCode(t, err, domain.EUNAVAILABLE)
			} else if name == "Send" {
				t.Error("Send succeeded on a device that never connected")
			}
		case <-time.After(waitLimit):
			t.Fatalf("%s still waits after Drop", name)
		}
	}
}

// Sends queued behind a send in flight when the device is dropped are
// refused at once, and never reach the client: WhatsApp takes one send at
// a time per device, so under load a device has a queue of them, and each
// waiting its turn on the old replica only to fail there would use up the
// caller's time for finding the new one.
func TestDropRefusesQueuedSendsAtOnce(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := startedHarness(t, clusterMode)
		h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1}
		h.disk.putLinked("a", jid1)
		if err := h.svc.Adopt(t.Context(), "a"); err != nil {
			t.Fatal(err)
		}
		h.waitState("a", domain.StateConnected)
		c := h.wa.last(t)
		gate := make(chan struct{})
		h.wa.mu.Lock()
		h.wa.sendGate = gate // the first send waits for WhatsApp's answer
		h.wa.mu.Unlock()

		first := make(chan error, 1)
		go func() {
			_, _, err := h.svc.Send(context.Background(), "a", "628111111111", "first")
			first <- err
		}()
		synctest.Wait() // the first send waits for WhatsApp
		const queued = 3
		rest := make(chan error, queued)
		for i := range queued {
			go func() {
				_, _, err := h.svc.Send(context.Background(), "a", "628111111111", fmt.Sprint("queued ", i))
				rest <- err
			}()
		}
		synctest.Wait() // the others wait behind it

		if err := h.svc.Drop(t.Context(), "a"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		waiting := 0
		for range queued {
			select {
			case err := <-rest:
				wantCode(t, err, domain.EUNAVAILABLE)
				if !errors.Is(err, domain.ErrMoving) {
					t.Errorf("a queued send refused with %v, want ErrMoving (the caller may retry elsewhere)", err)
				}
			default:
				waiting++
			}
		}
		if waiting > 0 {
			t.Errorf("%d sends queued behind the one in flight still wait after Drop", waiting)
		}
		c.mu.Lock()
		sends := c.sends
		c.mu.Unlock()
		if sends != 1 {
			t.Errorf("%d sends reached the client; want only the one in flight before the drop", sends)
		}
		close(gate)
		for range waiting {
			<-rest
		}
		if err := <-first; err == nil {
			t.Error("the send in flight succeeded on a client closed under it")
		}
	})
}

// In cluster mode a login never overwrites a slot the registry holds for
// a device another replica runs; a new id is created as usual.
func TestClusterLoginDoesNotOverwriteAnotherReplicasSlot(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, clusterMode)
	h.reg.slots["theirs"] = domain.Slot{ID: "theirs", JID: jid1}
	_, err := h.svc.LoginQR(t.Context(), "theirs")
	wantCode(t, err, domain.EUNAVAILABLE)
	if sl, _ := h.reg.get("theirs"); sl.JID != jid1 {
		t.Errorf("the slot was overwritten: %+v", sl)
	}
	if _, err := h.svc.LoginQR(t.Context(), "mine"); err != nil {
		t.Fatal(err)
	}
	if _, ok := h.reg.get("mine"); !ok {
		t.Error("the new slot is not in the registry")
	}
	// A device dropped, then taken back before any slot existed, can be
	// created (its lease came back to this replica).
	if err := h.svc.Drop(t.Context(), "fresh"); err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.LoginQR(t.Context(), "fresh")
	wantCode(t, err, domain.EUNAVAILABLE)
	wantCode(t, h.svc.Adopt(t.Context(), "fresh"), domain.ENOTFOUND)
	if _, err := h.svc.LoginQR(t.Context(), "fresh"); err != nil {
		t.Fatal(err)
	}
}

// A pairing cut off on a replica that died (the shared store lists it once
// that replica is gone) is finished by the replica that adopts its slot:
// promoted and connected if the phone had linked it, discarded if not.
func TestAdoptFinishesOrDiscardsCutOffPairings(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, clusterMode)
	h.reg.slots["linked"] = domain.Slot{ID: "linked"}
	h.reg.slots["unlinked"] = domain.Slot{ID: "unlinked"}
	id := identityOf(jid1)
	pairedPath := h.disk.putPairing("linked", &id)
	unpairedPath := h.disk.putPairing("unlinked", nil)

	for _, dev := range []string{"linked", "unlinked"} {
		if err := h.svc.Adopt(t.Context(), dev); err != nil {
			t.Fatalf("Adopt(%s): %v", dev, err)
		}
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
}

// gettingRegistry is a registry that reads one slot (slotGetter) and
// refuses to list: Adopt must not list every replica's slots.
type gettingRegistry struct{ *fakeRegistry }

func (r gettingRegistry) List(context.Context) ([]domain.Slot, error) {
	return nil, errBoom
}

func (r gettingRegistry) Get(_ context.Context, id string) (domain.Slot, bool, error) {
	sl, ok := r.get(id)
	return sl, ok, nil
}

// checkingDisk is a session store that tells one session apart
// (sessionChecker) and refuses to list them.
type checkingDisk struct{ *fakeDisk }

func (d checkingDisk) Sessions() ([]ports.StoredSession, error) { return nil, errBoom }

func (d checkingDisk) Has(jid string) (bool, error) { return d.has(jid), nil }

func (d checkingDisk) Pairings(id string) ([]ports.StoredSession, error) {
	all, err := d.fakeDisk.Sessions()
	var out []ports.StoredSession
	for _, st := range all {
		if st.JID == "" && st.DeviceID == id {
			out = append(out, st)
		}
	}
	return out, err
}

func TestAdoptReadsOneSlotWhenItCan(t *testing.T) {
	t.Parallel()
	h := newHarness(t, clusterMode)
	h.cfg.Registry = gettingRegistry{h.reg}
	h.cfg.Sessions = checkingDisk{h.disk}
	svc := New(h.cfg)
	t.Cleanup(func() { _ = svc.Close() })
	h.reg.slots["a"] = domain.Slot{ID: "a", JID: jid1}
	h.reg.slots["lost"] = domain.Slot{ID: "lost", JID: "628333333333:1@s.whatsapp.net"}
	h.disk.putLinked("a", jid1)
	for _, id := range []string{"a", "lost"} {
		if err := svc.Adopt(t.Context(), id); err != nil {
			t.Fatal(err)
		}
	}
	wantCode(t, svc.Adopt(t.Context(), "nobody"), domain.ENOTFOUND)
	if st, _ := svc.Get(t.Context(), "lost"); st.State != domain.StateLoggedOut {
		t.Errorf("lost: %+v", st)
	}
	if st, _ := svc.Get(t.Context(), "a"); st.State == domain.StateLoggedOut {
		t.Errorf("a: %+v", st)
	}
}

// In cluster mode a device is created only once Claim took its lease;
// Claim's error refuses the creation.
func TestClusterCreateClaimsTheLease(t *testing.T) {
	t.Parallel()
	var (
		mu      sync.Mutex
		claimed []string
	)
	h := startedHarness(t, clusterMode, func(c *Config) {
		c.Claim = func(_ context.Context, id string) error {
			mu.Lock()
			defer mu.Unlock()
			claimed = append(claimed, id)
			if id == "elsewhere" {
				return domain.Errorf(domain.EUNAVAILABLE, "device %s is run by another replica", id)
			}
			return nil
		}
	})
	st, err := h.svc.Create(t.Context(), "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = h.svc.LoginQR(t.Context(), "elsewhere")
	wantCode(t, err, domain.EUNAVAILABLE)
	if _, ok := h.reg.get("elsewhere"); ok {
		t.Error("a refused claim created the slot")
	}
	if _, err := h.svc.LoginQR(t.Context(), st.DeviceID); err != nil { // exists: no claim
		t.Fatal(err)
	}
	mu.Lock()
	if len(claimed) != 2 || claimed[0] != st.DeviceID || claimed[1] != "elsewhere" {
		t.Errorf("claimed %v", claimed)
	}
	mu.Unlock()
	// A device deleted and dropped here (its lease released) can be
	// created again: the claim takes the lease back.
	if _, err := h.svc.Delete(t.Context(), st.DeviceID); err != nil {
		t.Fatal(err)
	}
	if err := h.svc.Drop(t.Context(), st.DeviceID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Create(t.Context(), st.DeviceID); err != nil {
		t.Fatalf("create again after a drop: %v", err)
	}
}

// A claim that finds the slot exists after all (it adopts it) gives the
// login that device, without creating another.
func TestClusterClaimThatAdopts(t *testing.T) {
	t.Parallel()
	var h *harness
	h = startedHarness(t, clusterMode, func(c *Config) {
		c.Claim = func(ctx context.Context, id string) error { return h.svc.Adopt(ctx, id) }
	})
	h.reg.slots["idle"] = domain.Slot{ID: "idle", CreatedAt: h.clock.Now().Add(-time.Hour)}
	if _, err := h.svc.LoginQR(t.Context(), "idle"); err != nil {
		t.Fatal(err)
	}
	if sl, _ := h.reg.get("idle"); !sl.CreatedAt.Equal(h.clock.Now().Add(-time.Hour)) {
		t.Errorf("the slot was made again: %+v", sl)
	}
}

// gatedRegistry holds the first Get until release closes, after telling
// entered: a test can run a login between Adopt's first look at a device
// and its reading of the slot.
type gatedRegistry struct {
	*fakeRegistry
	once    sync.Once
	entered chan struct{}
	release chan struct{}
}

func (r *gatedRegistry) Get(ctx context.Context, id string) (domain.Slot, bool, error) {
	first := false
	r.once.Do(func() { first = true })
	if first {
		close(r.entered)
		select {
		case <-r.release:
		case <-ctx.Done():
			return domain.Slot{}, false, ctx.Err()
		}
	}
	return r.fakeRegistry.Get(ctx, id)
}

// A login creating a device here while Adopt of the same id is under way
// (a routed call, or a round, adopting the lease this replica just took
// while the login makes the slot) keeps its pairing: Adopt leaves a
// pairing of a device running here alone, though the store lists this
// replica's pairings with the cut-off ones. It used to discard it, and
// the phone's scan then failed to promote ("no pairing session").
func TestAdoptLeavesAPairingInProgressAlone(t *testing.T) {
	t.Parallel()
	reg := &gatedRegistry{fakeRegistry: newFakeRegistry(), entered: make(chan struct{}), release: make(chan struct{})}
	h := startedHarness(t, clusterMode, func(c *Config) { c.Registry = reg })
	h.reg = reg.fakeRegistry

	adopted := make(chan error, 1)
	go func() { adopted <- h.svc.Adopt(t.Context(), "a") }()
	<-reg.entered // Adopt found "a" not running and reads its slot
	if _, err := h.svc.LoginQR(t.Context(), "a"); err != nil {
		t.Fatalf("LoginQR: %v", err)
	}
	keys := h.disk.paths()
	if len(keys) != 1 || !isPairingKey(keys[0]) {
		t.Fatalf("sessions after LoginQR: %v, want one pairing", keys)
	}
	close(reg.release)
	if err := <-adopted; err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if !h.disk.has(keys[0]) {
		t.Fatalf("Adopt discarded the pairing in progress %s", keys[0])
	}
	if opened, _, _ := h.wa.counts(); opened != 1 {
		t.Errorf("%d clients opened, want 1 (the login's)", opened)
	}
	h.wa.nth(t, 1).pair(jid1)
	h.waitState("a", domain.StateConnected)
	if got := h.disk.paths(); len(got) != 1 || got[0] != jid1 {
		t.Errorf("sessions after pairing: %v, want [%s]", got, jid1)
	}
	if sl, _ := h.reg.get("a"); sl.JID != jid1 {
		t.Errorf("registry after pairing: %+v", sl)
	}
}
