package portstest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/ports"
)

// LeaseStore is one shared lease store, empty when made, as the Leases
// suite drives it.
type LeaseStore struct {
	// Replica returns the store as replica id sees it (several replicas
	// share one store).
	Replica func(t *testing.T, id string) ports.Leases
	// Register adds device slots to the registry whose devices Unowned
	// lists.
	Register func(t *testing.T, ids ...string)
	// Advance makes d pass for the store's expiries (the database's
	// clock), without the test sleeping.
	Advance func(t *testing.T, d time.Duration)
}

// Leases runs the ports.Leases contract against stores made by open, a
// fresh empty one per call.
func Leases(t *testing.T, open func(t *testing.T) LeaseStore) {
	ctx := context.Background()
	const ttl = 15 * time.Second

	t.Run("heartbeat, replicas in id order, expiry, leave", func(t *testing.T) {
		s := wrap(open(t))
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		if a.l.Self() != "a" || b.l.Self() != "b" {
			t.Fatalf("Self = %q, %q", a.l.Self(), b.l.Self())
		}
		if got := a.replicas(); len(got) != 0 {
			t.Fatalf("a new store lists replicas %+v", got)
		}
		b.heartbeat("http://b:3000", ttl)
		a.heartbeat("http://a:3000", ttl)
		got := b.replicas()
		if len(got) != 2 || got[0].ID != "a" || got[0].Addr != "http://a:3000" || got[1].ID != "b" || got[1].Addr != "http://b:3000" {
			t.Fatalf("Replicas = %+v", got)
		}
		s.Advance(t, ttl/2)
		a.heartbeat("http://a:3001", ttl) // a moved
		s.Advance(t, ttl/2+time.Second)   // b lapsed
		got = b.replicas()
		if len(got) != 1 || got[0].ID != "a" || got[0].Addr != "http://a:3001" {
			t.Fatalf("after b's heartbeat lapsed: %+v", got)
		}
		a.leave()
		a.leave() // leaving twice is not an error
		if got := b.replicas(); len(got) != 0 {
			t.Fatalf("after leaving: %+v", got)
		}
	})

	t.Run("acquire a free lease, renew it, refuse it to another", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "d1")
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		a.heartbeat("http://a", ttl)
		if l, live := b.owner("d1"); live || l.Holder != "" {
			t.Fatalf("Owner of a device never leased = %+v, live %v", l, live)
		}
		l, held := a.acquire("d1", ttl)
		if !held || l.DeviceID != "d1" || l.Holder != "a" || l.Addr != "http://a" || l.Token <= 0 {
			t.Fatalf("Acquire = %+v, held %v", l, held)
		}
		o, live := b.owner("d1")
		if !live || o.Holder != "a" || o.Addr != "http://a" || o.Token != l.Token || !o.Expires.Equal(l.Expires) {
			t.Fatalf("Owner = %+v, live %v; acquired %+v", o, live, l)
		}
		s.Advance(t, ttl/2)
		again, held := a.acquire("d1", ttl)
		if !held || again.Token != l.Token || !again.Expires.After(l.Expires) {
			t.Fatalf("re-acquiring its own live lease = %+v, held %v; want the same token %d, a later expiry than %v", again, held, l.Token, l.Expires)
		}
		other, held := b.acquire("d1", ttl)
		if held || other.Holder != "a" || other.Token != l.Token {
			t.Fatalf("b took a's live lease: %+v, held %v", other, held)
		}
		if got := b.renew(ttl); len(got) != 0 {
			t.Fatalf("b renewed %v, which it does not hold", got)
		}
		b.release("d1")
		if o, live := a.owner("d1"); !live || o.Holder != "a" {
			t.Fatalf("b released a's lease: %+v, live %v", o, live)
		}
	})

	t.Run("a lapsed lease goes to another replica, with a new token", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "d1", "d2")
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		la, _ := a.acquire("d1", ttl)
		a.acquire("d2", ttl)
		s.Advance(t, ttl+time.Second)
		if _, live := b.owner("d1"); live {
			t.Fatal("a lapsed lease is live")
		}
		if got := a.leases(); len(got) != 0 {
			t.Fatalf("Leases lists lapsed leases: %+v", got)
		}
		lb, held := b.acquire("d1", ttl)
		if !held || lb.Holder != "b" || lb.Token <= la.Token {
			t.Fatalf("Acquire of a lapsed lease = %+v, held %v; a's token was %d", lb, held, la.Token)
		}
		// a wakes up: it holds nothing any more, d2 included (lapsed,
		// though nobody took it), and cannot undo b's lease.
		if got := a.renew(ttl); len(got) != 0 {
			t.Fatalf("a renewed %v after its leases lapsed", got)
		}
		a.release("d1")
		if o, live := a.owner("d1"); !live || o.Holder != "b" || o.Token != lb.Token {
			t.Fatalf("after a's late renew and release: %+v, live %v", o, live)
		}
		// a takes d2 again as a new acquisition.
		l2, held := a.acquire("d2", ttl)
		if !held || l2.Token <= lb.Token {
			t.Fatalf("re-acquiring a lapsed lease of its own = %+v, held %v; want a new token above %d", l2, held, lb.Token)
		}
	})

	t.Run("renew extends every live lease held, and only those", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "x", "y", "z")
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		for _, id := range []string{"z", "x"} {
			a.acquire(id, ttl)
		}
		b.acquire("y", ttl)
		for range 3 { // three renewals, each 2/3 of the ttl apart: longer than one ttl in all
			s.Advance(t, ttl*2/3)
			if got := a.renew(ttl); !slices.Equal(got, []string{"x", "z"}) {
				t.Fatalf("Renew = %v, want [x z]", got)
			}
		}
		got := b.leases()
		if len(got) != 2 || got[0].DeviceID != "x" || got[0].Holder != "a" || got[1].DeviceID != "z" {
			t.Fatalf("Leases = %+v: want a's renewed x and z only (b's y lapsed)", got)
		}
		if got := b.renew(ttl); len(got) != 0 {
			t.Fatalf("b renewed its lapsed lease: %v", got)
		}
	})

	t.Run("release frees the lease for anyone", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "d1", "d2")
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		l1, _ := a.acquire("d1", ttl)
		a.acquire("d2", ttl)
		a.release()
		a.release("d1", "never-leased")
		if o, live := b.owner("d1"); live || o.Holder != "" {
			t.Fatalf("a released lease = %+v, live %v", o, live)
		}
		if got := a.renew(ttl); !slices.Equal(got, []string{"d2"}) {
			t.Fatalf("Renew after releasing d1 = %v", got)
		}
		lb, held := b.acquire("d1", ttl)
		if !held || lb.Token <= l1.Token {
			t.Fatalf("Acquire of a released lease = %+v, held %v", lb, held)
		}
	})

	t.Run("unowned: registered devices without a live lease, and the webhooks lease", func(t *testing.T) {
		s := wrap(open(t))
		a, b := s.Replica(t, "a"), s.Replica(t, "b")
		if got := a.unowned(); !slices.Equal(got, []string{ports.WebhooksLease}) {
			t.Fatalf("Unowned of an empty registry = %v", got)
		}
		s.Register(t, "c", "a1", "b2", "Z")
		a.acquire("a1", ttl)
		b.acquire("b2", time.Second)
		b.acquire(ports.WebhooksLease, ttl)
		b.acquire("not-registered", ttl)
		if got := a.unowned(); !slices.Equal(got, []string{"Z", "c"}) {
			t.Fatalf("Unowned = %v, want [Z c]", got)
		}
		s.Advance(t, 2*time.Second) // b2's short lease lapses
		if got := b.unowned(); !slices.Equal(got, []string{"Z", "b2", "c"}) {
			t.Fatalf("Unowned = %v, want [Z b2 c]", got)
		}
		b.release(ports.WebhooksLease)
		if got := b.unowned(); !slices.Equal(got, []string{"Z", "b2", "c", ports.WebhooksLease}) {
			t.Fatalf("Unowned = %v, want [Z b2 c ~webhooks]", got)
		}
	})

	t.Run("replicas racing for one lease: exactly one gets it", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "hot")
		const n = 8
		reps := make([]ports.Leases, n)
		for i := range reps {
			reps[i] = s.Replica(t, fmt.Sprintf("r%d", i)).l
		}
		for round := range 3 {
			var (
				wg      sync.WaitGroup
				mu      sync.Mutex
				winners []string
				tokens  = map[int64]bool{}
			)
			for _, r := range reps {
				wg.Add(1)
				go func() {
					defer wg.Done()
					l, held, err := r.Acquire(ctx, "hot", ttl)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					defer mu.Unlock()
					tokens[l.Token] = true
					if held {
						winners = append(winners, r.Self())
					}
				}()
			}
			wg.Wait()
			if len(winners) != 1 || len(tokens) != 1 {
				t.Fatalf("round %d: winners %v, tokens seen %v", round, winners, tokens)
			}
			s.Advance(t, ttl+time.Second)
		}
	})

	t.Run("a cancelled context changes nothing", func(t *testing.T) {
		s := wrap(open(t))
		s.Register(t, "d")
		a := s.Replica(t, "a")
		done, cancel := context.WithCancel(ctx)
		cancel()
		if _, _, err := a.l.Acquire(done, "d", ttl); err == nil {
			t.Error("Acquire with a cancelled context succeeded")
		}
		if err := a.l.Heartbeat(done, "x", ttl); err == nil {
			t.Error("Heartbeat with a cancelled context succeeded")
		}
		if _, live := a.owner("d"); live {
			t.Error("a cancelled Acquire took the lease")
		}
		if got := a.replicas(); len(got) != 0 {
			t.Errorf("a cancelled Heartbeat joined: %+v", got)
		}
	})
}

// store is a LeaseStore whose replicas fail the test on any error.
type store struct {
	LeaseStore
}

func wrap(s LeaseStore) store { return store{s} }

func (s store) Replica(t *testing.T, id string) *replica {
	return &replica{t: t, l: s.LeaseStore.Replica(t, id)}
}

// replica calls ports.Leases with a background context and fails the test
// on any error.
type replica struct {
	t *testing.T
	l ports.Leases
}

func (r *replica) check(err error) {
	r.t.Helper()
	if err != nil {
		r.t.Fatal(err)
	}
}

func (r *replica) heartbeat(addr string, ttl time.Duration) {
	r.t.Helper()
	r.check(r.l.Heartbeat(context.Background(), addr, ttl))
}

func (r *replica) leave() {
	r.t.Helper()
	r.check(r.l.Leave(context.Background()))
}

func (r *replica) replicas() []ports.Replica {
	r.t.Helper()
	v, err := r.l.Replicas(context.Background())
	r.check(err)
	return v
}

func (r *replica) acquire(id string, ttl time.Duration) (ports.Lease, bool) {
	r.t.Helper()
	l, ok, err := r.l.Acquire(context.Background(), id, ttl)
	r.check(err)
	return l, ok
}

func (r *replica) renew(ttl time.Duration) []string {
	r.t.Helper()
	v, err := r.l.Renew(context.Background(), ttl)
	r.check(err)
	return v
}

func (r *replica) release(ids ...string) {
	r.t.Helper()
	r.check(r.l.Release(context.Background(), ids...))
}

func (r *replica) owner(id string) (ports.Lease, bool) {
	r.t.Helper()
	l, ok, err := r.l.Owner(context.Background(), id)
	r.check(err)
	return l, ok
}

func (r *replica) leases() []ports.Lease {
	r.t.Helper()
	v, err := r.l.Leases(context.Background())
	r.check(err)
	return v
}

func (r *replica) unowned() []string {
	r.t.Helper()
	v, err := r.l.Unowned(context.Background())
	r.check(err)
	return v
}
