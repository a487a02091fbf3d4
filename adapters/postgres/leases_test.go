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
	// One database for the whole suite, emptied for each store (the
	// suite's cases run one after another): making a database per case
	// took seconds each on a busy machine. Pools are opened once per
	// replica id.
	suite := t
	uri := pgtest.DB(t)
	admin := open(t, uri, "admin")
	pools := map[string]*postgres.DB{}
	exec := func(t *testing.T, sql string, args ...any) {
		t.Helper()
		if _, err := admin.Pool.Exec(context.Background(), sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	portstest.Leases(t, func(t *testing.T) portstest.LeaseStore {
		exec(t, `TRUNCATE gowa_leases, gowa_replicas, gowa_devices`)
		return portstest.LeaseStore{
			Replica: func(_ *testing.T, id string) ports.Leases {
				db, ok := pools[id]
				if !ok {
					db = open(suite, uri, id) // closed when the suite ends
					pools[id] = db
				}
				return postgres.NewLeases(db)
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
