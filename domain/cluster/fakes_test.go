package cluster

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeStore is an in-memory lease store shared by several replicas, with
// the registry's device ids. Its clock is now (time.Now inside a synctest
// bubble, a hand-moved clock for the contract suite).
type fakeStore struct {
	now func() time.Time

	mu       sync.Mutex
	devices  map[string]bool
	replicas map[string]ports.Replica
	leases   map[string]ports.Lease // Holder "" when released
	token    int64
	// down: the replicas that cannot reach the store. Their calls wait
	// for their context to end (a stalled connection), then fail as
	// unavailable.
	down map[string]bool
	// failRelease: how many of each replica's next Release calls time
	// out (a database slow under load), changing nothing.
	failRelease map[string]int
}

func newFakeStore(now func() time.Time) *fakeStore {
	return &fakeStore{
		now:         now,
		devices:     map[string]bool{},
		replicas:    map[string]ports.Replica{},
		leases:      map[string]ports.Lease{},
		down:        map[string]bool{},
		failRelease: map[string]int{},
	}
}

func (s *fakeStore) register(ids ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		s.devices[id] = true
	}
}

func (s *fakeStore) setDown(id string, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down[id] = down
}

// replica returns the store as replica id sees it.
func (s *fakeStore) replica(id string) *fakeLeases { return &fakeLeases{s: s, id: id} }

// holders returns each live lease's holder, by device.
func (s *fakeStore) holders() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]string{}
	for id, l := range s.leases {
		if s.liveLocked(l) {
			out[id] = l.Holder
		}
	}
	return out
}

func (s *fakeStore) liveLocked(l ports.Lease) bool {
	return l.Holder != "" && !l.Expires.Before(s.now())
}

type fakeLeases struct {
	s  *fakeStore
	id string
}

var _ ports.Leases = (*fakeLeases)(nil)

// enter checks ctx and the replica's connection, and locks the store.
func (f *fakeLeases) enter(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f.s.mu.Lock()
	down := f.s.down[f.id]
	if !down {
		return nil
	}
	f.s.mu.Unlock()
	<-ctx.Done()
	return fmt.Errorf("%w: %w", ports.ErrStoreUnavailable, ctx.Err())
}

func (f *fakeLeases) Self() string { return f.id }

func (f *fakeLeases) Heartbeat(ctx context.Context, addr string, ttl time.Duration) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.s.mu.Unlock()
	f.s.replicas[f.id] = ports.Replica{ID: f.id, Addr: addr, Expires: f.s.now().Add(ttl)}
	return nil
}

func (f *fakeLeases) Leave(ctx context.Context) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.s.mu.Unlock()
	delete(f.s.replicas, f.id)
	return nil
}

func (f *fakeLeases) Replicas(ctx context.Context) ([]ports.Replica, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	defer f.s.mu.Unlock()
	var out []ports.Replica
	for _, r := range f.s.replicas {
		if !r.Expires.Before(f.s.now()) {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b ports.Replica) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

func (f *fakeLeases) withAddr(l ports.Lease) ports.Lease {
	l.Addr = ""
	if r, ok := f.s.replicas[l.Holder]; ok && l.Holder != "" {
		l.Addr = r.Addr
	}
	return l
}

func (f *fakeLeases) Acquire(ctx context.Context, id string, ttl time.Duration) (ports.Lease, bool, error) {
	if err := f.enter(ctx); err != nil {
		return ports.Lease{}, false, err
	}
	defer f.s.mu.Unlock()
	l, ok := f.s.leases[id]
	live := ok && f.s.liveLocked(l)
	if live && l.Holder != f.id {
		return f.withAddr(l), false, nil
	}
	if !live {
		f.s.token++
		l.Token = f.s.token
	}
	l.DeviceID, l.Holder, l.Expires = id, f.id, f.s.now().Add(ttl)
	f.s.leases[id] = l
	return f.withAddr(l), true, nil
}

func (f *fakeLeases) Renew(ctx context.Context, ttl time.Duration) ([]string, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	defer f.s.mu.Unlock()
	var ids []string
	for id, l := range f.s.leases {
		if l.Holder == f.id && f.s.liveLocked(l) {
			l.Expires = f.s.now().Add(ttl)
			f.s.leases[id] = l
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

func (f *fakeLeases) Release(ctx context.Context, ids ...string) error {
	if err := f.enter(ctx); err != nil {
		return err
	}
	defer f.s.mu.Unlock()
	if f.s.failRelease[f.id] > 0 {
		f.s.failRelease[f.id]--
		return fmt.Errorf("release: %w: %w", ports.ErrStoreUnavailable, context.DeadlineExceeded)
	}
	for _, id := range ids {
		if l, ok := f.s.leases[id]; ok && l.Holder == f.id {
			l.Holder, l.Expires = "", f.s.now()
			f.s.leases[id] = l
		}
	}
	return nil
}

func (f *fakeLeases) Owner(ctx context.Context, id string) (ports.Lease, bool, error) {
	if err := f.enter(ctx); err != nil {
		return ports.Lease{}, false, err
	}
	defer f.s.mu.Unlock()
	l, ok := f.s.leases[id]
	if !ok {
		return ports.Lease{DeviceID: id}, false, nil
	}
	return f.withAddr(l), f.s.liveLocked(l), nil
}

func (f *fakeLeases) Leases(ctx context.Context) ([]ports.Lease, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	defer f.s.mu.Unlock()
	var out []ports.Lease
	for _, l := range f.s.leases {
		if f.s.liveLocked(l) {
			out = append(out, f.withAddr(l))
		}
	}
	slices.SortFunc(out, func(a, b ports.Lease) int { return cmp.Compare(a.DeviceID, b.DeviceID) })
	return out, nil
}

func (f *fakeLeases) Unowned(ctx context.Context) ([]string, error) {
	if err := f.enter(ctx); err != nil {
		return nil, err
	}
	defer f.s.mu.Unlock()
	var out []string
	for id := range f.s.devices {
		if l, ok := f.s.leases[id]; !ok || !f.s.liveLocked(l) {
			out = append(out, id)
		}
	}
	if l, ok := f.s.leases[ports.WebhooksLease]; !ok || !f.s.liveLocked(l) {
		out = append(out, ports.WebhooksLease)
	}
	slices.Sort(out)
	return out, nil
}

// The fake passes the same contract as the PostgreSQL adapter.
func TestFakeLeasesContract(t *testing.T) {
	portstest.Leases(t, func(t *testing.T) portstest.LeaseStore {
		var (
			mu  sync.Mutex
			now = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		)
		s := newFakeStore(func() time.Time {
			mu.Lock()
			defer mu.Unlock()
			return now
		})
		return portstest.LeaseStore{
			Replica:  func(_ *testing.T, id string) ports.Leases { return s.replica(id) },
			Register: func(_ *testing.T, ids ...string) { s.register(ids...) },
			Advance: func(_ *testing.T, d time.Duration) {
				mu.Lock()
				now = now.Add(d)
				mu.Unlock()
			},
		}
	})
}

// world is what the simulated WhatsApp sees: which replica runs each
// device. It records every time a device ran on two replicas at once.
type world struct {
	store *fakeStore

	mu      sync.Mutex
	running map[string]string   // device → replica
	adopts  map[string]int      // device → times started anywhere
	starts  map[string][]string // device → the replicas it started on, in order
	twice   []string
}

func newWorld(store *fakeStore) *world {
	return &world{store: store, running: map[string]string{}, adopts: map[string]int{}, starts: map[string][]string{}}
}

// fakeDevices is one replica's device service.
type fakeDevices struct {
	w       *world
	replica string
	// busy: devices reported pairing.
	busy map[string]bool
	// slow: devices whose start waits for their channel to close (a
	// session store slow under load). Set before the device starts.
	slow map[string]chan struct{}
	// startTakes is how long each start takes (virtual time).
	startTakes time.Duration
}

func (w *world) devices(replica string) *fakeDevices {
	return &fakeDevices{w: w, replica: replica, busy: map[string]bool{}, slow: map[string]chan struct{}{}}
}

func (d *fakeDevices) Adopt(ctx context.Context, id string) error {
	d.w.mu.Lock()
	gate := d.slow[id]
	d.w.mu.Unlock()
	if gate != nil {
		<-gate
	}
	d.w.mu.Lock()
	takes := d.startTakes
	d.w.mu.Unlock()
	time.Sleep(takes)
	d.w.store.mu.Lock()
	registered := d.w.store.devices[id]
	d.w.store.mu.Unlock()
	if !registered {
		return domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if r, ok := d.w.running[id]; ok {
		if r != d.replica {
			d.w.twice = append(d.w.twice, fmt.Sprintf("%s on %s and %s", id, r, d.replica))
		}
		return nil
	}
	d.w.running[id] = d.replica
	d.w.adopts[id]++
	d.w.starts[id] = append(d.w.starts[id], d.replica)
	return nil
}

func (d *fakeDevices) Drop(ctx context.Context, id string) error {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if d.w.running[id] == d.replica {
		delete(d.w.running, id)
	}
	return nil
}

func (d *fakeDevices) Get(ctx context.Context, id string) (domain.Status, error) {
	d.w.mu.Lock()
	defer d.w.mu.Unlock()
	if d.w.running[id] != d.replica {
		return domain.Status{}, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	st := domain.Status{DeviceID: id, State: domain.StateConnected}
	if d.busy[id] {
		st.State = domain.StatePairing
	}
	return st, nil
}

// crash forgets every device replica runs, as its process dying would.
func (w *world) crash(replica string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for id, r := range w.running {
		if r == replica {
			delete(w.running, id)
		}
	}
}

// counts is how many devices each replica runs.
func (w *world) counts() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := map[string]int{}
	for _, r := range w.running {
		out[r]++
	}
	return out
}

func (w *world) checkNeverTwice(t *testing.T) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.twice) > 0 {
		t.Fatalf("devices ran on two replicas at once: %v", w.twice)
	}
}
