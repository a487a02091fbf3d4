package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// registered answers Config.Registered from the fake registry; failing
// makes it fail as an unreachable database does.
func (cl *cluster) registered(failing *atomic.Bool) func(*Config) {
	return func(cfg *Config) {
		cfg.Registered = func(ctx context.Context, id string) (bool, error) {
			if failing != nil && failing.Load() {
				return false, fmt.Errorf("registry: %w", ports.ErrStoreUnavailable)
			}
			cl.store.mu.Lock()
			defer cl.store.mu.Unlock()
			return cl.store.devices[id], nil
		}
	}
}

// With Config.Registered, a call for an id the registry lacks takes no
// lease: it is answered where it arrived (the device service says there is
// no such device); a creation takes the lease through Claim; a registered
// device nobody holds is still taken on demand.
func TestRouteTakesNoLeaseForAnUnknownDevice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		cl := newCluster(t, 4)
		var failing atomic.Bool
		a := cl.startWith("a", cl.registered(&failing))
		settle(ttl)
		b := cl.startWith("b", cl.registered(nil))
		settle(4 * ttl)
		cl.wantSpread(map[string]int{"a": 2, "b": 2})
		ctx := context.Background()
		leased := func(id string) (string, bool) {
			l, live, err := cl.store.replica("a").Owner(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			return l.Holder, live
		}

		// A typo: answered here, no lease, nothing started.
		if local, addr, _, err := a.c.Route(ctx, "ghost"); !local || addr != "" || err != nil {
			t.Fatalf("Route of an unknown id = %v %q %v, want local", local, addr, err)
		}
		if h, live := leased("ghost"); live {
			t.Fatalf("an unknown id was leased to %s", h)
		}
		for _, id := range a.c.Held() {
			if id == "ghost" {
				t.Fatal("a holds an unknown id")
			}
		}
		if r, ok := cl.world.running["ghost"]; ok {
			t.Fatalf("an unknown device runs on %s", r)
		}

		// A login creating it: Claim takes the lease before the slot
		// exists; the other replica's calls then go to the creator.
		if err := b.c.Claim(ctx, "fresh"); err != nil {
			t.Fatal(err)
		}
		if h, live := leased("fresh"); !live || h != "b" {
			t.Fatalf("after Claim the lease is %q's (live %v), want b's", h, live)
		}
		if local, addr, _, err := a.c.Route(ctx, "fresh"); local || addr != "http://b" || err != nil {
			t.Fatalf("Route of b's new device on a = %v %q %v", local, addr, err)
		}
		cl.store.register("fresh") // the login created it
		settle(ttl / 3)
		if r := cl.world.running["fresh"]; r != "b" {
			t.Fatalf("the new device runs on %q, want b", r)
		}

		// A registered device nobody holds yet (made on another replica a
		// moment ago) is still taken on demand.
		cl.store.register("late")
		if local, _, _, err := a.c.Route(ctx, "late"); !local || err != nil {
			t.Fatalf("Route of a registered free device = %v, %v", local, err)
		}
		if h, live := leased("late"); !live || h != "a" {
			t.Fatalf("the registered free device is %q's (live %v), want a's", h, live)
		}

		// The registry cannot be read: unavailable, not a guess.
		failing.Store(true)
		_, _, retry, err := a.c.Route(ctx, "ghost2")
		if domain.ErrorCode(err) != domain.EUNAVAILABLE || !errors.Is(err, ports.ErrStoreUnavailable) || retry <= 0 {
			t.Fatalf("Route with the registry unreachable = %v, retry %v", err, retry)
		}
		failing.Store(false)

		// Draining, an unknown id goes to the other replica, which
		// answers it (or creates it, for a login).
		cl.world.checkNeverTwice(t)
		if err := a.c.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if local, addr, _, err := a.c.Route(ctx, "ghost"); local || addr != "http://b" || err != nil {
			t.Fatalf("Route of an unknown id while drained = %v %q %v, want b", local, addr, err)
		}
		if local, _, _, err := b.c.Route(ctx, "ghost"); !local || err != nil {
			t.Fatalf("Route of an unknown id on b = %v, %v", local, err)
		}
		if _, live := leased("ghost"); live {
			t.Fatal("an unknown id was leased")
		}
	})
}
