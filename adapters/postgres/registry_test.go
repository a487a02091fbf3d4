package postgres_test

import (
	"context"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestRegistryContract(t *testing.T) {
	t.Parallel()
	portstest.Registry(t, func(t *testing.T) ports.Registry {
		return postgres.NewRegistry(open(t, pgtest.DB(t), "a"))
	})
}

func TestRegistrySharedByReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	a, b := postgres.NewRegistry(open(t, uri, "a")), postgres.NewRegistry(open(t, uri, "b"))
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456000, time.UTC)
	if err := a.Put(ctx, domain.Slot{ID: "x", JID: "628111:3@s.whatsapp.net", CreatedAt: at}); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Get(ctx, "x")
	if err != nil || !ok || got.JID != "628111:3@s.whatsapp.net" || !got.CreatedAt.Equal(at) {
		t.Fatalf("the other replica reads %+v, %v, %v", got, ok, err)
	}
	// One account, one slot: the fencing triggers find a session's device
	// by its JID.
	err = b.Put(ctx, domain.Slot{ID: "y", JID: "628111:3@s.whatsapp.net", CreatedAt: at})
	if domain.ErrorCode(err) != domain.ECONFLICT {
		t.Fatalf("a second slot with the same JID: %v, want ECONFLICT", err)
	}
	// Unlinked slots share the empty JID.
	for _, id := range []string{"y", "z"} {
		if err := b.Put(ctx, domain.Slot{ID: id, CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
	}
}
