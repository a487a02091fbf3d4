package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// hubOn starts an event service as a replica on the shared log at uri,
// woken by Watch.
func hubOn(t *testing.T, uri, holder string) *events.Hub {
	t.Helper()
	store := postgres.NewEvents(open(t, uri, holder))
	ctx, cancel := context.WithCancel(context.Background())
	appended, hooks := store.Watch(ctx)
	h := events.New(events.Config{Store: store, Shared: &events.Shared{Appended: appended, Webhooks: hooks}})
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
	a, b := hubOn(t, uri, "a"), hubOn(t, uri, "b")
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
