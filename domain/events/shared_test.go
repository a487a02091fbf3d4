package events_test

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// sharedStore is one memStore that several hubs share, as replicas share
// one PostgreSQL: each hub is woken when any of them appends or changes a
// webhook, as Watch does.
type sharedStore struct {
	*memStore
	mu       sync.Mutex
	appended []chan struct{}
	hooks    []chan struct{}
}

func (s *sharedStore) watch() *events.Shared {
	s.mu.Lock()
	defer s.mu.Unlock()
	a, h := make(chan struct{}, 1), make(chan struct{}, 1)
	s.appended = append(s.appended, a)
	s.hooks = append(s.hooks, h)
	return &events.Shared{Appended: a, Webhooks: h}
}

func pokeAll(mu *sync.Mutex, chs []chan struct{}) {
	mu.Lock()
	defer mu.Unlock()
	for _, ch := range chs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (s *sharedStore) Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error) {
	out, err := s.memStore.Append(ctx, evs, route)
	if err == nil {
		pokeAll(&s.mu, s.appended)
	}
	return out, err
}

func (s *sharedStore) PutWebhook(ctx context.Context, w domain.Webhook) error {
	err := s.memStore.PutWebhook(ctx, w)
	pokeAll(&s.mu, s.hooks)
	return err
}

func (s *sharedStore) DeleteWebhook(ctx context.Context, id string) error {
	err := s.memStore.DeleteWebhook(ctx, id)
	pokeAll(&s.mu, s.hooks)
	return err
}

// replica starts a hub on the shared store.
func replica(t *testing.T, s *sharedStore, tweak func(*events.Config)) *events.Hub {
	h, _ := newHub(t, s.memStore, func(c *events.Config) {
		c.Store = s
		c.Shared = s.watch()
		if tweak != nil {
			tweak(c)
		}
	})
	return h
}

// Every replica's stream carries every replica's events, each once, in id
// order.
func TestSharedLogStreamsCarryEveryReplicasEvents(t *testing.T) {
	t.Parallel()
	s := &sharedStore{memStore: newMemStore()}
	a, b := replica(t, s, nil), replica(t, s, nil)
	var subs []*events.Subscription
	for _, h := range []*events.Hub{a, b} {
		sub, err := h.Subscribe(context.Background(), events.Filter{}, 0, false)
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs = append(subs, sub)
	}
	const each = 50
	var wg sync.WaitGroup
	for _, h := range []*events.Hub{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				h.Emit("d", domain.EventMessageSent, nil)
			}
		}()
	}
	wg.Wait()
	for i, sub := range subs {
		for id := int64(1); id <= 2*each; id++ {
			if ev := next(t, sub); ev.ID != id {
				t.Fatalf("replica %d's stream: event %d, want %d", i, ev.ID, id)
			}
		}
	}
}

// Only the replica whose gate is open delivers; when the gate moves, the
// other takes over from where the outbox stands.
func TestSharedOutboxIsDeliveredByTheGateHolderOnly(t *testing.T) {
	t.Parallel()
	s := &sharedStore{memStore: newMemStore()}
	global := domain.Webhook{URL: "http://global.test/", Secret: secret16}
	var aGate, bGate atomic.Bool
	aSnd, bSnd := &sender{}, &sender{}
	a := replica(t, s, func(c *events.Config) {
		c.Sender, c.Global, c.Deliver = aSnd, []domain.Webhook{global}, aGate.Load
	})
	b := replica(t, s, func(c *events.Config) {
		c.Sender, c.Global, c.Deliver = bSnd, []domain.Webhook{global}, bGate.Load
	})
	bGate.Store(true)
	b.WakeDispatchers()
	for range 3 {
		a.Emit("d", domain.EventMessageSent, nil)
	}
	waitFor(t, func() bool { return slices.Equal(bSnd.delivered(global.URL), []int64{1, 2, 3}) })
	bGate.Store(false)
	aGate.Store(true) // no WakeDispatchers: a closed gate is polled
	b.Emit("d", domain.EventMessageSent, nil)
	waitFor(t, func() bool { return slices.Equal(aSnd.delivered(global.URL), []int64{4}) })
	if got := bSnd.delivered(global.URL); !slices.Equal(got, []int64{1, 2, 3}) {
		t.Fatalf("the closed gate's replica delivered %v", got)
	}
}

// A device webhook set on one replica is delivered by another, the one
// that delivers; when the device is deleted, its last events go and the
// webhook goes from every replica.
func TestSharedDeviceWebhooksFollowTheStore(t *testing.T) {
	t.Parallel()
	s := &sharedStore{memStore: newMemStore()}
	never := func() bool { return false }
	aSnd, bSnd := &sender{}, &sender{}
	a := replica(t, s, func(c *events.Config) { c.Sender, c.Deliver = aSnd, never })
	b := replica(t, s, func(c *events.Config) { c.Sender = bSnd })
	hook := domain.Webhook{DeviceID: "x", URL: "http://x.test/", Secret: secret16}
	if err := a.SetDeviceWebhook(context.Background(), hook); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := b.DeviceWebhook("x"); return ok })
	a.Emit("x", domain.EventDeviceCreated, nil)
	a.Emit("x", domain.EventDeviceDeleted, nil)
	a.Emit("x", domain.EventDeviceCreated, nil) // created again: no webhook
	waitFor(t, func() bool { return slices.Equal(bSnd.delivered(hook.URL), []int64{1, 2}) })
	waitFor(t, func() bool { l, _ := s.ListWebhooks(context.Background()); return len(l) == 0 })
	for _, h := range []*events.Hub{a, b} {
		waitFor(t, func() bool { _, ok := h.DeviceWebhook("x"); return !ok })
	}
	// A webhook set after the deletion is not retired by it.
	hook2 := domain.Webhook{DeviceID: "x", URL: "http://x2.test/", Secret: secret16}
	if err := a.SetDeviceWebhook(context.Background(), hook2); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { _, ok := b.DeviceWebhook("x"); return ok })
	a.Emit("x", domain.EventDevicePairing, nil)
	waitFor(t, func() bool { return slices.Equal(bSnd.delivered(hook2.URL), []int64{4}) })
	if got := aSnd.delivered(hook.URL); len(got) != 0 {
		t.Fatalf("the replica with the closed gate delivered %v", got)
	}
}
