package postgres_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestLeasesContract(t *testing.T) {
	t.Parallel()
	portstest.Leases(t, func(t *testing.T) portstest.LeaseStore {
		uri := pgtest.DB(t)
		admin := open(t, uri, "admin")
		exec := func(t *testing.T, sql string, args ...any) {
			t.Helper()
			if _, err := admin.Pool.Exec(context.Background(), sql, args...); err != nil {
				t.Fatal(err)
			}
		}
		return portstest.LeaseStore{
			Replica: func(t *testing.T, id string) ports.Leases {
				return postgres.NewLeases(open(t, uri, id))
			},
			Register: func(t *testing.T, ids ...string) {
				for _, id := range ids {
					exec(t, `INSERT INTO gowa_devices (id, created_at) VALUES ($1, now())`, id)
				}
			},
			// Time passes for the leases when every expiry moves back.
			Advance: func(t *testing.T, d time.Duration) {
				exec(t, `UPDATE gowa_leases SET expires_at = expires_at - $1 * interval '1 microsecond'`, d.Microseconds())
				exec(t, `UPDATE gowa_replicas SET expires_at = expires_at - $1 * interval '1 microsecond'`, d.Microseconds())
			},
		}
	})
}

// A database that cannot be reached is ErrStoreUnavailable, on every call,
// and the same replica works again once it is back.
func TestLeasesUnavailable(t *testing.T) {
	t.Parallel()
	c := pgtest.New(t)
	db := open(t, c.NewDB(t), "a")
	l := postgres.NewLeases(db)
	ctx := context.Background()
	if _, _, err := l.Acquire(ctx, "d", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	calls := map[string]func() error{
		"Heartbeat": func() error { return l.Heartbeat(ctx, "x", time.Minute) },
		"Renew":     func() error { _, err := l.Renew(ctx, time.Minute); return err },
		"Acquire":   func() error { _, _, err := l.Acquire(ctx, "d", time.Minute); return err },
		"Release":   func() error { return l.Release(ctx, "d") },
		"Owner":     func() error { _, _, err := l.Owner(ctx, "d"); return err },
		"Leases":    func() error { _, err := l.Leases(ctx); return err },
		"Unowned":   func() error { _, err := l.Unowned(ctx); return err },
		"Replicas":  func() error { _, err := l.Replicas(ctx); return err },
		"Leave":     func() error { return l.Leave(ctx) },
	}
	for name, call := range calls {
		if err := call(); !errors.Is(err, ports.ErrStoreUnavailable) {
			t.Errorf("%s with the database down = %v, want ErrStoreUnavailable", name, err)
		}
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	held, err := l.Renew(ctx, time.Minute)
	if err != nil || len(held) != 1 || held[0] != "d" {
		t.Fatalf("Renew once the database is back = %v, %v", held, err)
	}
}
