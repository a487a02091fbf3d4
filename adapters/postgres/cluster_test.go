package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/cluster"
	"github.com/gowa-dev/gowa/ports"
)

// Coordinators on a real PostgreSQL, with fake device services: the
// placement, failover, drain and fencing of domain/cluster against the
// real leases, NOTIFY and an outage of the real server.

// world records which replica runs each device, and every time one ran on
// two replicas at once.
type world struct {
	mu      sync.Mutex
	running map[string]string
	twice   []string
}

func (w *world) counts() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for _, r := range w.running {
		out[r]++
	}
	return out
}

func (w *world) crash(replica string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, r := range w.running {
		if r == replica {
			delete(w.running, id)
		}
	}
}

// devices is one replica's fake device service.
type devices struct {
	w       *world
	replica string
}

func (d devices) Adopt(_ context.Context, id string) error {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if r, ok := d.w.running[id]; ok && r != d.replica {
		d.w.twice = append(d.w.twice, id+" on "+r+" and "+d.replica)
	}
	d.w.running[id] = d.replica
	return nil
}

func (d devices) Drop(_ context.Context, id string) error {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if d.w.running[id] == d.replica {
		delete(d.w.running, id)
	}
	return nil
}

func (d devices) Get(_ context.Context, id string) (domain.Status, error) {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if d.w.running[id] != d.replica {
		return domain.Status{}, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	return domain.Status{DeviceID: id, State: domain.StateConnected}, nil
}

// replica is one coordinator with its pool and listener.
type replica struct {
	id     string
	c      *cluster.Coordinator
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startReplica(t *testing.T, uri, id string, w *world, ttl time.Duration) *replica {
	t.Helper()
	db := open(t, uri, id)
	leases := postgres.NewLeases(db)
	wake := make(chan struct{}, 1)
	r := &replica{id: id}
	r.c = cluster.New(cluster.Config{
		Leases:  leases,
		Devices: devices{w: w, replica: id},
		Addr:    "http://" + id,
		TTL:     ttl,
		Wake:    wake,
		Notify:  leases.NotifyPlacement,
	})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(2)
	go func() { defer r.wg.Done(); leases.ListenPlacement(ctx, wake) }()
	go func() { defer r.wg.Done(); _ = r.c.Run(ctx) }()
	t.Cleanup(r.stop) // before the pool closes: cleanups run last first
	return r
}

func (r *replica) stop() {
	r.cancel()
	r.wg.Wait()
}

// waitFor polls cond (the state of a database or another goroutine, which
// tells nobody when it changes) until it holds, failing after a minute; it
// returns how long that took.
func waitFor(t *testing.T, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > time.Minute {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

func register(t *testing.T, db *postgres.DB, n int) {
	t.Helper()
	for i := range n {
		if _, err := db.Pool.Exec(context.Background(), `INSERT INTO gowa_devices (id, created_at) VALUES ($1, now())`, fmt.Sprintf("d%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

func spread(w *world, want map[string]int) func() bool {
	return func() bool {
		got := w.counts()
		for r, n := range want {
			if got[r] != n {
				return false
			}
		}
		return true
	}
}

func TestCoordinatorsOnPostgres(t *testing.T) {
	// Checked once every cleanup ran (registered first, it runs last):
	// the pools close in cleanups.
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	const ttl = 3 * time.Second
	uri := pgtest.DB(t)
	register(t, open(t, uri, "admin"), 30)
	w := &world{running: map[string]string{}}
	reps := map[string]*replica{}
	for _, id := range []string{"a", "b", "c"} {
		reps[id] = startReplica(t, uri, id, w, ttl)
	}
	took := waitFor(t, "10 devices on each replica", spread(w, map[string]int{"a": 10, "b": 10, "c": 10}))
	t.Logf("3 replicas, 30 devices: spread in %v", took.Round(time.Millisecond))
	waitFor(t, "one webhook deliverer", func() bool {
		n := 0
		for _, r := range reps {
			if r.c.Delivers() {
				n++
			}
		}
		return n == 1
	})

	// kill -9 of c: its leases lapse, a and b take its devices.
	reps["c"].stop()
	w.crash("c")
	took = waitFor(t, "a and b to run every device", spread(w, map[string]int{"a": 15, "b": 15}))
	t.Logf("failover after a replica died: %v with a %v lease", took.Round(time.Millisecond), ttl)

	// Drain of b: a takes everything, woken by NOTIFY rather than its
	// next round.
	start := time.Now()
	if err := reps["b"].c.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a to run every device", spread(w, map[string]int{"a": 30}))
	t.Logf("handover on drain: %v", time.Since(start).Round(time.Millisecond))
	if !reps["a"].c.Delivers() {
		t.Error("a does not deliver the webhooks")
	}

	// A replica that joins gets its share by handoff.
	reps["d"] = startReplica(t, uri, "d", w, ttl)
	took = waitFor(t, "a and d to share the devices", spread(w, map[string]int{"a": 15, "d": 15}))
	t.Logf("handoff on join: %v", took.Round(time.Millisecond))

	for _, r := range reps {
		r.stop()
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.twice) > 0 {
		t.Fatalf("devices ran on two replicas at once: %v", w.twice)
	}
}

// PostgreSQL stopped: every call of the leases is ErrStoreUnavailable;
// every replica stops its devices (and answers unavailable), and they all
// come back by themselves once it returns. (One test: each stops a cluster
// of its own, and a cluster takes seconds to make.)
func TestOutage(t *testing.T) {
	ignore := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, ignore) })
	const ttl = 3 * time.Second
	pg := pgtest.New(t)
	uri := pg.NewDB(t)
	admin := open(t, uri, "admin")
	register(t, admin, 20)
	l := postgres.NewLeases(admin)
	ctx := context.Background()
	if _, _, err := l.Acquire(ctx, "x", time.Minute); err != nil {
		t.Fatal(err)
	}
	w := &world{running: map[string]string{}}
	a, b := startReplica(t, uri, "a", w, ttl), startReplica(t, uri, "b", w, ttl)
	waitFor(t, "10 devices on each replica", spread(w, map[string]int{"a": 10, "b": 10}))

	if err := pg.Stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	calls := map[string]func() error{
		"Heartbeat": func() error { return l.Heartbeat(ctx, "x", time.Minute) },
		"Renew":     func() error { _, err := l.Renew(ctx, time.Minute); return err },
		"Acquire":   func() error { _, _, err := l.Acquire(ctx, "x", time.Minute); return err },
		"Release":   func() error { return l.Release(ctx, "x") },
		"Owner":     func() error { _, _, err := l.Owner(ctx, "x"); return err },
		"Leases":    func() error { _, err := l.Leases(ctx); return err },
		"Unowned":   func() error { _, err := l.Unowned(ctx); return err },
		"Replicas":  func() error { _, err := l.Replicas(ctx); return err },
		"Leave":     func() error { return l.Leave(ctx) },
		"Notify":    func() error { return l.NotifyPlacement(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ports.ErrStoreUnavailable) {
			t.Errorf("%s with the database down = %v, want ErrStoreUnavailable", name, err)
		}
	}
	took := waitFor(t, "every device to stop", func() bool { return len(w.counts()) == 0 })
	t.Logf("devices stopped %v after PostgreSQL (stale at %v, lapse at %v after the last renewal)", took.Round(time.Millisecond), ttl*2/3, ttl)
	if !a.c.Fenced() || !b.c.Fenced() {
		t.Errorf("fenced: a %v, b %v", a.c.Fenced(), b.c.Fenced())
	}
	if _, _, _, err := a.c.Route(ctx, "d000"); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("Route during the outage = %v", err)
	}
	for time.Since(stopped) < 2*ttl { // well past every lease
		time.Sleep(100 * time.Millisecond)
	}
	if err := pg.Start(); err != nil {
		t.Fatal(err)
	}
	took = waitFor(t, "the devices back", spread(w, map[string]int{"a": 10, "b": 10}))
	t.Logf("back %v after PostgreSQL", took.Round(time.Millisecond))
	if held, err := l.Renew(ctx, time.Minute); err != nil || len(held) != 1 || held[0] != "x" {
		t.Errorf("Renew once the database is back = %v, %v", held, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.twice) > 0 {
		t.Fatalf("devices ran on two replicas at once: %v", w.twice)
	}
}
