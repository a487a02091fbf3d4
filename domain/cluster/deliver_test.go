package cluster

import (
	"context"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gowa-dev/gowa/ports"
)

// gate records what a coordinator tells the event service (OnDeliver)
// and plays its deliveries in flight (WaitDeliveries).
type gate struct {
	mu       sync.Mutex
	told     []bool
	inflight chan struct{} // closed when the deliveries in flight end; nil: none
	waited   int
}

func (g *gate) config(cfg *Config) {
	cfg.OnDeliver = func(on bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.told = append(g.told, on)
	}
	cfg.WaitDeliveries = func(ctx context.Context) error {
		g.mu.Lock()
		g.waited++
		ch := g.inflight
		g.mu.Unlock()
		if ch == nil {
			return nil
		}
		select {
		case <-ch:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (g *gate) history() []bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.told)
}

// The coordinator tells the event service each time it starts or stops
// delivering the webhooks, at once, and only then: when it takes their
// lease, when it is fenced, when it renews again, when it drains.
func TestDeliveryIsTold(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		var ga, gb gate
		a := cl.startWith("a", ga.config)
		settle(ttl)
		if !a.c.Delivers() || !slices.Equal(ga.history(), []bool{true}) {
			t.Fatalf("a delivers %v, told %v; want true, [true]", a.c.Delivers(), ga.history())
		}
		b := cl.startWith("b", gb.config)
		settle(2 * ttl)
		if len(gb.history()) != 0 || !slices.Equal(ga.history(), []bool{true}) {
			t.Fatalf("rounds without a change told a %v, b %v", ga.history(), gb.history())
		}

		// Fenced: told false when the watchdog stops the devices; true
		// again once a renewal works and the lease is still a's.
		cl.store.setDown("a", true)
		cut := time.Now()
		for len(ga.history()) < 2 && time.Since(cut) < ttl {
			settle(100 * time.Millisecond)
		}
		if a.c.Delivers() || !slices.Equal(ga.history(), []bool{true, false}) {
			t.Fatalf("fenced: delivers %v, told %v", a.c.Delivers(), ga.history())
		}
		cl.store.setDown("a", false)
		settle(ttl / 3)
		if !a.c.Delivers() || !slices.Equal(ga.history(), []bool{true, false, true}) {
			t.Fatalf("renewing again: delivers %v, told %v", a.c.Delivers(), ga.history())
		}

		// Drain: false before anything is released; b is told true when
		// it takes the lease, woken by the drain's notify.
		if err := a.c.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !slices.Equal(ga.history(), []bool{true, false, true, false}) {
			t.Fatalf("drained: told %v", ga.history())
		}
		if !b.c.Delivers() || !slices.Equal(gb.history(), []bool{true}) {
			t.Fatalf("b delivers %v, told %v", b.c.Delivers(), gb.history())
		}
	})
}

// Drain keeps the webhooks lease until the deliveries in flight end, so
// that the next holder sends none of them again; and no longer than
// DeliveryWait, so that a receiver that never answers cannot hold the
// handover.
func TestDrainWaitsForDeliveriesInFlight(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		var ga, gb gate
		ga.inflight = make(chan struct{})
		a := cl.startWith("a", ga.config)
		settle(ttl)
		b := cl.startWith("b", gb.config)
		settle(2 * ttl)
		if !a.c.Delivers() {
			t.Fatal("a, first up, does not deliver")
		}

		drained := make(chan error, 1)
		go func() { drained <- a.c.Drain(context.Background()) }()
		settle(time.Second)
		select {
		case err := <-drained:
			t.Fatalf("Drain returned (%v) with deliveries in flight", err)
		default:
		}
		if a.c.Delivers() || cl.store.holders()[ports.WebhooksLease] != "a" {
			t.Fatalf("while deliveries are in flight: a delivers %v, the lease is %q's", a.c.Delivers(), cl.store.holders()[ports.WebhooksLease])
		}
		if got := cl.world.counts()["a"]; got != 0 {
			t.Fatalf("a still runs %d devices: the wait held up the devices' handover", got)
		}
		close(ga.inflight) // the last delivery is recorded
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if !b.c.Delivers() {
			t.Fatal("b does not deliver after a drained")
		}

		// b's receiver never answers: its drain waits DeliveryWait (TTL/3
		// by default), then hands the lease over anyway.
		gb.mu.Lock()
		gb.inflight = make(chan struct{})
		gb.mu.Unlock()
		c := cl.startWith("c", nil)
		settle(ttl)
		began := time.Now()
		if err := b.c.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if waited := time.Since(began); waited < ttl/3 || waited > ttl/3+time.Second {
			t.Fatalf("Drain waited %v for a delivery that never ends, want %v", waited, ttl/3)
		}
		synctest.Wait()
		if !c.c.Delivers() {
			t.Fatal("c does not deliver after b drained")
		}
		if gb.waited != 1 {
			t.Fatalf("b waited for its deliveries %d times", gb.waited)
		}
	})
}
