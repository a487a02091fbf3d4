package postgres_test

import (
	"context"
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
