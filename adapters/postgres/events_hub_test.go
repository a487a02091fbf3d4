package postgres_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// hubOn starts an event service as a replica on the shared log at uri,
// woken by Watch.
func hubOn(t *testing.T, uri, holder string, tweak func(*events.Config)) *events.Hub {
	t.Helper()
	store := postgres.NewEvents(open(t, uri, holder))
	ctx, cancel := context.WithCancel(context.Background())
	appended, hooks := store.Watch(ctx)
	cfg := events.Config{Store: store, Shared: &events.Shared{Appended: appended, Webhooks: hooks}}
	if tweak != nil {
		tweak(&cfg)
	}
	h := events.New(cfg)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = h.Close()
		cancel()
		for range appended { // closed once Watch has stopped
		}
		for range hooks {
		}
	})
	return h
}

// Two replicas on one PostgreSQL log: the stream of each carries the
// events the other appends, with the ids of the log, in order.
func TestHubsOnOneLogSeeEachOthersEvents(t *testing.T) {
	t.Parallel()
	uri := pgtest.DB(t)
	a, b := hubOn(t, uri, "a", nil), hubOn(t, uri, "b", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sub, err := b.Subscribe(ctx, events.Filter{}, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	a.Emit("x", domain.EventDeviceCreated, nil)
	b.Emit("y", domain.EventDeviceCreated, nil)
	a.Emit("x", domain.EventDeviceDeleted, nil)
	got := map[string][]domain.EventType{}
	var last int64
	for range 3 {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatalf("b's stream: %v (got %v)", err, got)
		}
		if ev.ID <= last {
			t.Fatalf("b's stream: id %d after %d", ev.ID, last)
		}
		last = ev.ID
		got[ev.DeviceID] = append(got[ev.DeviceID], ev.Type)
	}
	if len(got["x"]) != 2 || got["x"][0] != domain.EventDeviceCreated || got["x"][1] != domain.EventDeviceDeleted || len(got["y"]) != 1 {
		t.Fatalf("b's stream told %v", got)
	}
	// A page read on b holds a's events too.
	page, _, err := b.Page(ctx, events.Filter{Devices: []string{"x"}}, 0, 10)
	if err != nil || len(page) != 2 {
		t.Fatalf("b's page of x: %+v, %v", page, err)
	}
}

// A device webhook set on one replica is delivered, to a real HTTP
// receiver, by the replica whose gate is open, each event once and in
// order; when the gate moves, the other replica goes on from there.
func TestHubsOnOneLogDeliverThroughTheGateHolder(t *testing.T) {
	t.Parallel()
	const secret = "0123456789abcdef"
	var (
		mu  sync.Mutex
		got []int64
	)
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(secret, r.Header.Get(webhook.HeaderSignature), body, time.Now(), time.Minute); err != nil {
			t.Errorf("delivery signature: %v", err)
		}
		var ev domain.LiveEvent
		if err := json.Unmarshal(body, &ev); err != nil {
			t.Errorf("delivery body %s: %v", body, err)
		}
		mu.Lock()
		got = append(got, ev.ID)
		mu.Unlock()
	}))
	defer recv.Close()
	delivered := func() []int64 { mu.Lock(); defer mu.Unlock(); return slices.Clone(got) }

	uri := pgtest.DB(t)
	var aGate, bGate atomic.Bool
	bGate.Store(true)
	gated := func(g *atomic.Bool) func(*events.Config) {
		return func(c *events.Config) {
			c.Sender = webhook.New(webhook.Options{})
			c.Deliver = g.Load
			c.RetryPoll = 10 * time.Millisecond
		}
	}
	a, b := hubOn(t, uri, "a", gated(&aGate)), hubOn(t, uri, "b", gated(&bGate))
	ctx := context.Background()
	if err := a.SetDeviceWebhook(ctx, domain.Webhook{DeviceID: "x", URL: recv.URL, Secret: secret}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b to learn the webhook", func() bool { _, ok := b.DeviceWebhook("x"); return ok })
	for range 20 {
		a.Emit("x", domain.EventMessageSent, nil)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "20 deliveries", func() bool { return len(delivered()) >= 20 })
	// The gate moves once b has recorded what it delivered, as a lease
	// handoff does (b stops, then releases, then a acquires). A gate that
	// moved while b was still sending could have a send some again:
	// delivery is at least once.
	waitFor(t, "b to clear its deliveries", func() bool {
		d, err := a.OutboxDepth(ctx)
		return err == nil && d["device:x"].Pending == 0
	})
	bGate.Store(false)
	aGate.Store(true)
	a.WakeDispatchers()
	for range 5 {
		b.Emit("x", domain.EventMessageSent, nil)
	}
	waitFor(t, "25 deliveries", func() bool { return len(delivered()) >= 25 })
	ids := delivered()
	for i, id := range ids {
		if len(ids) != 25 || id != int64(i+1) {
			t.Fatalf("delivered %v, want events 1 to 25, once each, in order", ids)
		}
	}
}
