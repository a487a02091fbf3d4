package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// The tests run in synctest bubbles: time is virtual, so a 15 s lease
// passes at once, and synctest.Wait returns when every goroutine of the
// bubble is blocked (waiting for a timer, or the store).

const ttl = 15 * time.Second

// cluster is several coordinators on one fake store and one world.
type cluster struct {
	t     *testing.T
	store *fakeStore
	world *world
	nodes map[string]*node

	mu    sync.Mutex
	wakes []chan struct{} // every node's Wake, for Notify
}

type node struct {
	c      *Coordinator
	dev    *fakeDevices
	cancel context.CancelFunc
	done   chan struct{}
}

func newCluster(t *testing.T, devices int) *cluster {
	return newSkewedCluster(t, devices, 0)
}

// newSkewedCluster is newCluster with the store's clock skew ahead of the
// replicas'.
func newSkewedCluster(t *testing.T, devices int, skew time.Duration) *cluster {
	store := newFakeStore(func() time.Time { return time.Now().Add(skew) })
	for i := range devices {
		store.register(fmt.Sprintf("d%03d", i))
	}
	return &cluster{t: t, store: store, world: newWorld(store), nodes: map[string]*node{}}
}

// start runs a coordinator for replica id until stop or the test's end.
func (cl *cluster) start(id string) *node { return cl.startWith(id, nil) }

// startWith is start with the coordinator's Config changed by opt.
func (cl *cluster) startWith(id string, opt func(*Config)) *node {
	wake := make(chan struct{}, 1)
	cl.mu.Lock()
	cl.wakes = append(cl.wakes, wake)
	cl.mu.Unlock()
	dev := cl.world.devices(id)
	cfg := Config{
		Leases:  cl.store.replica(id),
		Devices: dev,
		Addr:    "http://" + id,
		TTL:     ttl,
		Wake:    wake,
		Notify: func(context.Context) error {
			cl.mu.Lock()
			defer cl.mu.Unlock()
			for _, w := range cl.wakes {
				if w != wake {
					select {
					case w <- struct{}{}:
					default:
					}
				}
			}
			return nil
		},
	}
	if opt != nil {
		opt(&cfg)
	}
	c := New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{c: c, dev: dev, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		_ = c.Run(ctx)
	}()
	cl.nodes[id] = n
	cl.t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	n.cancel()
	<-n.done
}

// settle lets d of virtual time pass and every goroutine come to rest.
func settle(d time.Duration) {
	time.Sleep(d)
	synctest.Wait()
}

// wantSpread checks that every device runs exactly once, on the replica
// holding its lease, and that each replica runs want[replica].
func (cl *cluster) wantSpread(want map[string]int) {
	cl.t.Helper()
	cl.world.checkNeverTwice(cl.t)
	got := cl.world.counts()
	for r, n := range want {
		if got[r] != n {
			cl.t.Fatalf("replicas run %v, want %v", got, want)
		}
	}
	holders := cl.store.holders()
	cl.world.mu.Lock()
	defer cl.world.mu.Unlock()
	for id := range cl.store.devices {
		if r, ok := cl.world.running[id]; !ok || holders[id] != r {
			cl.t.Fatalf("device %s runs on %q, its lease is %q's", id, r, holders[id])
		}
	}
}

// deliverers lists the replicas that deliver webhooks.
func (cl *cluster) deliverers() []string {
	var out []string
	for id, n := range cl.nodes {
		if n.c.Delivers() {
			out = append(out, id)
		}
	}
	return out
}

func TestFairSpreadAmongThree(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 30)
		// A lease of no live replica (a tool's, or a replica whose
		// heartbeat lapsed) does not count against the share.
		if _, ok, _ := cl.store.replica("tool").Acquire(context.Background(), "stray", 100*ttl); !ok {
			t.Fatal("no stray lease")
		}
		for _, id := range []string{"a", "b", "c"} {
			cl.start(id)
		}
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 10, "b": 10, "c": 10})
		if got := cl.deliverers(); len(got) != 1 {
			t.Fatalf("webhooks delivered by %v, want exactly one replica", got)
		}
		// Started together, they placed once they saw each other: no
		// device was started on one and handed to another.
		for id, n := range cl.world.adopts {
			if n != 1 {
				t.Errorf("%s started %d times", id, n)
			}
		}
		// Steady: more rounds change nothing.
		before := maps(cl.store.holders())
		settle(3 * ttl)
		if after := maps(cl.store.holders()); after != before {
			t.Errorf("placement moved devices while nothing changed")
		}
	})
}

// maps prints a map in key order, to compare two.
func maps(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := ""
	for _, k := range keys {
		s += k + "=" + m[k] + " "
	}
	return s
}

// A replica that dies (no drain, no more renewals) loses its devices at
// expiry, and the others take them at once, even though the database's
// clock is an hour off the replicas'.
func TestFailoverWhenOneStops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newSkewedCluster(t, 30, time.Hour)
		for _, id := range []string{"a", "b", "c"} {
			cl.start(id)
		}
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 10, "b": 10, "c": 10})
		webhooks := cl.deliverers()[0]

		var lapse time.Time // when c's last lease lapses
		cl.store.mu.Lock()
		for _, l := range cl.store.leases {
			if l.Holder == "c" && l.Expires.After(lapse) {
				lapse = l.Expires
			}
		}
		cl.store.mu.Unlock()
		died := time.Now()
		cl.nodes["c"].stop() // kill -9: nothing handed over
		cl.world.crash("c")
		delete(cl.nodes, "c")
		// Until its leases lapse, nobody takes c's devices.
		settle(ttl * 2 / 3)
		if got := cl.world.counts(); got["a"]+got["b"] != 20 {
			t.Fatalf("c's devices moved before its leases lapsed: %v", got)
		}
		for cl.world.counts()["a"]+cl.world.counts()["b"] < 30 {
			settle(50 * time.Millisecond)
			if time.Since(died) > 2*ttl {
				t.Fatalf("after %v the survivors run %v", time.Since(died), cl.world.counts())
			}
		}
		// The survivors take the devices just after the leases lapse,
		// not at their next regular round.
		if late := cl.store.now().Sub(lapse); late > time.Second {
			t.Errorf("the survivors took c's devices %v after its leases lapsed", late)
		}
		t.Logf("failover %v (virtual) after c died, %v after its leases lapsed, with a %v lease", time.Since(died), cl.store.now().Sub(lapse), ttl)
		// A call for a device of a replica is sent there, with the time
		// its lease has left (by the database's clock) to wait when that
		// replica cannot be reached.
		theirs := cl.nodes["b"].c.Held()[0]
		_, addr, retry, err := cl.nodes["a"].c.Route(context.Background(), theirs)
		if addr != "http://b" || err != nil || retry < ttl/2 || retry > ttl {
			t.Errorf("Route of b's device = %q, retry %v, %v", addr, retry, err)
		}
		cl.wantSpread(map[string]int{"a": 15, "b": 15})
		if webhooks == "c" {
			settle(ttl / 3)
		}
		if got := cl.deliverers(); len(got) != 1 || got[0] == "c" {
			t.Fatalf("webhooks delivered by %v after c died", got)
		}
	})
}

// A replica that cannot reach the store stops its devices before its
// leases lapse, answers unavailable meanwhile, and takes its share again
// once the store answers.
func TestCannotRenewDropsBeforeLapse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 20)
		a, _ := cl.start("a"), cl.start("b")
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 10, "b": 10})
		if local, _, _, err := a.c.Route(context.Background(), a.c.Held()[0]); !local || err != nil {
			t.Fatalf("Route of a held device = %v, %v", local, err)
		}

		cl.store.setDown("a", true)
		cut := time.Now()
		// a's last renewal started at most a round (TTL/3) before the cut;
		// it stops everything by 2/3 TTL after it, well before the lapse.
		for cl.world.counts()["a"] > 0 {
			settle(100 * time.Millisecond)
		}
		stopped := time.Since(cut)
		if stopped > ttl*2/3 {
			t.Fatalf("a stopped its devices %v after losing the store, want within 2/3 of the lease (%v)", stopped, ttl*2/3)
		}
		if !a.c.Fenced() || a.c.Delivers() {
			t.Fatalf("a is fenced %v, delivers %v", a.c.Fenced(), a.c.Delivers())
		}
		if _, _, retry, err := a.c.Route(context.Background(), "d000"); domain.ErrorCode(err) != domain.EUNAVAILABLE || retry <= 0 {
			t.Fatalf("Route while fenced = %v, retry %v", err, retry)
		}
		// b takes a's devices once they lapse, never before.
		for cl.world.counts()["b"] < 20 {
			settle(time.Second)
			if time.Since(cut) > 2*ttl {
				t.Fatalf("b runs %v after a's leases lapsed", cl.world.counts())
			}
		}
		cl.world.checkNeverTwice(t)
		if got := cl.deliverers(); len(got) != 1 || got[0] != "b" {
			t.Fatalf("webhooks delivered by %v", got)
		}

		cl.store.setDown("a", false)
		settle(4 * ttl)
		if a.c.Fenced() {
			t.Fatal("a is still fenced once the store answers")
		}
		cl.wantSpread(map[string]int{"a": 10, "b": 10})
	})
}

// A short outage (a sixth of the lease: renewals resume before the
// devices have to stop) changes nothing, wherever it falls between rounds.
func TestShortOutageChangesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 6)
		a := cl.start("a")
		settle(ttl)
		cl.wantSpread(map[string]int{"a": 6})
		for _, cut := range []time.Duration{0, ttl / 3 * 9 / 10} { // right after a round; right before one
			time.Sleep(cut)
			cl.store.setDown("a", true)
			time.Sleep(ttl / 6)
			cl.store.setDown("a", false)
			settle(ttl)
		}
		settle(2 * ttl)
		if a.c.Fenced() {
			t.Fatal("fenced after a short outage")
		}
		cl.wantSpread(map[string]int{"a": 6})
		for id, n := range cl.world.adopts {
			if n != 1 {
				t.Errorf("%s started %d times", id, n)
			}
		}
	})
}

// A replica that joins gets its share by orderly handoff: the holder stops
// each device and releases it before the newcomer starts it.
func TestHandoffOnJoin(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 24)
		cl.start("a")
		settle(2 * ttl)
		cl.wantSpread(map[string]int{"a": 24})
		cl.nodes["a"].dev.busy["d000"] = true // pairing: never handed off

		joined := time.Now()
		cl.start("b")
		cl.start("c")
		for c := cl.world.counts(); c["a"] != 8 || c["b"] != 8 || c["c"] != 8; c = cl.world.counts() {
			settle(time.Second)
			cl.world.checkNeverTwice(t)
			if time.Since(joined) > 4*ttl {
				t.Fatalf("%v after the join the replicas run %v", time.Since(joined), c)
			}
		}
		cl.wantSpread(map[string]int{"a": 8, "b": 8, "c": 8})
		if r := cl.world.running["d000"]; r != "a" {
			t.Errorf("the pairing device moved to %s", r)
		}
		t.Logf("3 replicas balanced within %v (virtual) of the join", time.Since(joined))
	})
}

// A device handed off is never started again on the replica that handed
// it off, even when releasing its lease failed (a database slow under
// load): its lease then stays this replica's until released, and the
// renewal that finds it must not take the device back.
func TestHandoffWhoseReleaseFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 8)
		cl.start("a")
		settle(2 * ttl)
		cl.wantSpread(map[string]int{"a": 8})
		cl.store.mu.Lock()
		cl.store.failRelease["a"] = 1
		cl.store.mu.Unlock()

		joined := time.Now()
		cl.start("b")
		for c := cl.world.counts(); c["a"] != 4 || c["b"] != 4; c = cl.world.counts() {
			settle(time.Second)
			cl.world.checkNeverTwice(t)
			if time.Since(joined) > 4*ttl {
				t.Fatalf("%v after the join the replicas run %v", time.Since(joined), c)
			}
		}
		cl.wantSpread(map[string]int{"a": 4, "b": 4})
		for id, on := range cl.world.starts {
			if len(on) > 1 && slices.Index(on[1:], "a") >= 0 {
				t.Errorf("%s started on %v: a took it back after handing it off", id, on)
			}
		}
	})
}

// A call that read the device's state before this replica handed it off
// (it waited for the database meanwhile) does not take the device back
// when it finds it free: it goes to another replica. Taken back, the
// device would be handed off again at the next round, its calls refused
// each time (a rolling restart under load did so within 10 ms).
func TestCallDoesNotTakeBackAHandedOffDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		a := cl.start("a")
		settle(2 * ttl)
		cl.start("b")
		settle(ttl / 2)
		cl.wantSpread(map[string]int{"a": 2, "b": 2})
		// Both devices b runs, a handed off just now. b stops without a
		// word, its leases released (as if a drain's release went
		// through and nothing else did).
		gone := cl.nodes["b"].c.Held()
		cl.nodes["b"].stop()
		cl.world.crash("b")
		if err := cl.store.replica("b").Release(context.Background(), gone...); err != nil {
			t.Fatal(err)
		}
		for _, id := range gone {
			// What Route does once the stale state it read says to take
			// a free device.
			local, addr, _, err := a.c.acquire(context.Background(), id, false, "test")
			if local || addr != "http://b" || err != nil {
				t.Errorf("acquire of %s, handed off by a: local %v, addr %q, %v; want it sent to b", id, local, addr, err)
			}
		}
		if got := cl.world.counts()["a"]; got != 2 {
			t.Errorf("a runs %d devices, want its own 2", got)
		}
	})
}

// The leases are renewed on time even while starting or stopping a device
// takes long (a database slow under load) and holds up placement: a call
// that takes a device and waits for its start must not leave the other
// devices' leases unrenewed until the watchdog stops them all.
func TestSlowStartDoesNotHoldUpRenewals(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		a := cl.start("a")
		settle(2 * ttl)
		cl.wantSpread(map[string]int{"a": 4})

		cl.store.register("slow")
		gate := make(chan struct{})
		cl.world.mu.Lock()
		a.dev.slow["slow"] = gate
		cl.world.mu.Unlock()
		routed := make(chan error, 1)
		go func() {
			_, _, _, err := a.c.Route(context.Background(), "slow")
			routed <- err
		}()
		settle(2 * ttl)
		if a.c.Fenced() || cl.world.counts()["a"] != 4 {
			t.Errorf("while one device was slow to start, a is fenced %v and runs %v", a.c.Fenced(), cl.world.counts())
		}
		close(gate)
		if err := <-routed; err != nil {
			t.Fatal(err)
		}
		settle(ttl)
		cl.wantSpread(map[string]int{"a": 5})
	})
}

// A round that starts many devices, each slow to start, renews the leases
// as it goes: its work must not outlast 2/3 of the lease without a
// renewal, or the watchdog stops every device.
func TestLongRoundRenewsAsItGoes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 2)
		a := cl.start("a")
		settle(2 * ttl)
		cl.wantSpread(map[string]int{"a": 2})
		cl.world.mu.Lock()
		a.dev.startTakes = ttl / 4
		cl.world.mu.Unlock()
		for i := range 8 { // two lease times of starts in one round
			cl.store.register(fmt.Sprintf("n%d", i))
		}
		for cl.world.counts()["a"] < 10 {
			settle(time.Second)
			if a.c.Fenced() {
				t.Fatalf("a fenced itself while starting devices; it runs %v", cl.world.counts())
			}
		}
		cl.wantSpread(map[string]int{"a": 10})
	})
}

// Two replicas that both handed a device off lately (one took it for a
// call while over its share and handed it on) each send its calls to the
// other; the one a call is forwarded to takes it, rather than both
// refusing it until the handoffs are a lease time old.
func TestForwardedCallTakesADeviceBothHandedOff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		a, b := cl.start("a"), cl.start("b")
		settle(2 * ttl)
		cl.wantSpread(map[string]int{"a": 2, "b": 2})
		// No more rounds: placement would take the free device itself
		// (in the rolling restart both replicas were at their share).
		a.stop()
		b.stop()
		id := a.c.Held()[0]
		// a hands id off; b takes it for a call and hands it off too.
		now := time.Now()
		for _, n := range []*node{a, b} {
			n.c.mu.Lock()
			delete(n.c.held, id)
			n.c.handedOff[id] = now
			n.c.mu.Unlock()
		}
		_ = a.dev.Drop(context.Background(), id)
		if err := cl.store.replica("a").Release(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		local, addr, _, err := a.c.Route(ctx, id)
		if local || addr != "http://b" || err != nil {
			t.Fatalf("Route on a = %v %q %v, want it sent to b", local, addr, err)
		}
		// A call that reached b first goes to a: b handed it off.
		if local, addr, _, _ := b.c.Route(ctx, id); local || addr != "http://a" {
			t.Fatalf("Route on b = %v %q, want it sent to a", local, addr)
		}
		// Forwarded to b right after b's handoff (routed to b as its
		// holder just before): not taken back yet.
		if local, _, _, _ := b.c.RouteForwarded(ctx, id); local {
			t.Fatal("a call forwarded right after the handoff took the device back")
		}
		time.Sleep(ttl / 5)
		if local, addr, _, err := b.c.RouteForwarded(ctx, id); !local || err != nil {
			t.Fatalf("RouteForwarded on b = %v %q %v, want b to take it", local, addr, err)
		}
		if r := cl.world.running[id]; r != "b" {
			t.Fatalf("%s runs on %q", id, r)
		}
		cl.world.checkNeverTwice(t)
	})
}

// Drain hands every device over, gives up the webhooks, leaves, and sends
// calls for free devices to another replica meanwhile.
func TestDrain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 10)
		a := cl.start("a")
		settle(ttl)
		b := cl.start("b")
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 5, "b": 5})
		if !a.c.Delivers() {
			t.Fatal("a, first up, does not deliver the webhooks")
		}

		// The first release times out (a database slow under load): Drain
		// tries again rather than leave the others to wait for the lapse.
		cl.store.mu.Lock()
		cl.store.failRelease["a"] = 1
		cl.store.mu.Unlock()
		if err := a.c.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if got := cl.world.counts()["a"]; got != 0 {
			t.Fatalf("a runs %d devices after Drain", got)
		}
		if len(a.c.Held()) != 0 || a.c.Delivers() {
			t.Fatalf("after Drain a holds %v, delivers %v", a.c.Held(), a.c.Delivers())
		}
		reps, _ := cl.store.replica("b").Replicas(context.Background())
		if len(reps) != 1 || reps[0].ID != "b" {
			t.Fatalf("live replicas after a drained: %+v", reps)
		}
		// A free device's calls go to b, which takes it on demand.
		free := "new-device"
		local, addr, _, err := a.c.Route(context.Background(), free)
		if local || addr != "http://b" || err != nil {
			t.Fatalf("Route on a drained replica = %v %q %v, want b", local, addr, err)
		}
		// Woken by Drain's notify, b takes everything without waiting
		// for its next round.
		synctest.Wait()
		cl.wantSpread(map[string]int{"b": 10})
		if !b.c.Delivers() {
			t.Fatal("b does not deliver the webhooks")
		}
		// a's rounds do nothing any more.
		settle(2 * ttl)
		if reps, _ := cl.store.replica("b").Replicas(context.Background()); len(reps) != 1 {
			t.Fatalf("a joined again: %+v", reps)
		}
	})
}

func TestRoute(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		a := cl.start("a")
		settle(ttl)
		b := cl.start("b")
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 2, "b": 2})
		ctx := context.Background()
		mine, theirs := a.c.Held()[0], b.c.Held()[0]

		if local, _, _, err := a.c.Route(ctx, mine); !local || err != nil {
			t.Errorf("Route of its own device = %v, %v", local, err)
		}
		local, addr, retry, err := a.c.Route(ctx, theirs)
		if local || addr != "http://b" || err != nil || retry <= 0 || retry > ttl {
			t.Errorf("Route of b's device = %v %q %v %v", local, addr, retry, err)
		}
		if _, _, _, err := a.c.Route(ctx, "bad/id"); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("Route of a bad id = %v", err)
		}

		// A new device is leased to the replica that got its first call,
		// even before its slot exists (a login creates it there).
		if local, _, _, err := b.c.Route(ctx, "fresh"); !local || err != nil {
			t.Fatalf("Route of a new device = %v, %v", local, err)
		}
		if local, addr, _, _ := a.c.Route(ctx, "fresh"); local || addr != "http://b" {
			t.Fatalf("the new device is not b's: %v %q", local, addr)
		}
		cl.store.register("fresh") // the login created it
		settle(ttl / 3)
		if r := cl.world.running["fresh"]; r != "b" {
			t.Fatalf("the new device runs on %q", r)
		}
		// A lease this replica holds without knowing it (the answer to
		// its acquisition was lost) is taken up by the next call.
		cl.store.register("lost-answer")
		if _, ok, _ := cl.store.replica("a").Acquire(ctx, "lost-answer", ttl); !ok {
			t.Fatal("no lease")
		}
		if local, _, _, err := a.c.Route(ctx, "lost-answer"); !local || err != nil {
			t.Fatalf("Route of a lease held unknowingly = %v, %v", local, err)
		}
		if r := cl.world.running["lost-answer"]; r != "a" {
			t.Fatalf("lost-answer runs on %q", r)
		}
		// Claim: the device service creating a device takes its lease.
		if err := a.c.Claim(ctx, "generated-1"); err != nil {
			t.Fatal(err)
		}
		if o, live, _ := cl.store.replica("b").Owner(ctx, "generated-1"); !live || o.Holder != "a" {
			t.Fatalf("after Claim the lease is %+v, live %v", o, live)
		}
		if err := b.c.Claim(ctx, "generated-1"); domain.ErrorCode(err) != domain.EUNAVAILABLE {
			t.Fatalf("Claim of a's device on b = %v", err)
		}
		// One that never gets a slot is released after a lease time.
		if local, _, _, _ := a.c.Route(ctx, "ghost"); !local {
			t.Fatal("ghost not routed here")
		}
		settle(2 * ttl)
		if _, live, _ := cl.store.replica("a").Owner(ctx, "ghost"); live {
			t.Fatal("the lease of a device that never got a slot is still held")
		}
		cl.world.checkNeverTwice(t)
	})
}

var _ ports.Leases = (*fakeLeases)(nil)
