package postgres_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
)

// linkSession makes a linked session of jid for slot id on s, registered
// in gowa_devices, and returns its device.
func linkSession(t testing.TB, db *postgres.DB, s *postgres.Sessions, id, jid string) *store.Device {
	t.Helper()
	ctx := context.Background()
	key, err := s.NewPairing(id)
	if err != nil {
		t.Fatal(err)
	}
	dev := pairDevice(t, s, key, jid)
	if err := s.Promote(key, jid); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO gowa_devices (id, jid, created_at) VALUES ($1, $2, now())`, id, jid); err != nil {
		t.Fatal(err)
	}
	return dev
}

// setLease gives device id's lease to holder (a takeover when another held
// it), as the leases adapter does: a new token, a new expiry.
func setLease(t testing.TB, db *postgres.DB, id, holder string) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), `
		INSERT INTO gowa_leases (device_id, holder, token, expires_at)
		VALUES ($1, $2, nextval('gowa_lease_token'), now() + interval '15 seconds')
		ON CONFLICT (device_id) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_at = excluded.expires_at`,
		id, holder); err != nil {
		t.Fatal(err)
	}
}

// writeRound numbers the calls of writes.
var writeRound atomic.Int32

// writes makes one write of each kind whatsmeow makes to a session: the
// device itself, an identity, a Signal session, prekeys, app state, a
// contact. Each call writes something new (whatsmeow skips writes that
// change nothing).
func writes(ctx context.Context, dev *store.Device) map[string]error {
	n := writeRound.Add(1)
	their := types.NewJID("628999", types.DefaultUserServer)
	k := keys.NewKeyPair()
	out := map[string]error{
		"device":    dev.Save(ctx),
		"identity":  dev.Identities.PutIdentity(ctx, their.SignalAddress().String(), *k.Pub),
		"session":   dev.Sessions.PutSession(ctx, their.SignalAddress().String(), []byte("s")),
		"app state": dev.AppState.PutAppStateVersion(ctx, "regular", 1, [128]byte{}),
	}
	_, _, out["contact"] = dev.Contacts.PutPushName(ctx, their, fmt.Sprintf("Bob %d", n))
	_, out["prekeys"] = dev.PreKeys.GetOrGenPreKeys(ctx, uint32(3*n))
	return out
}

// Replica A holds the lease of a linked device; B takes it over; from then
// on A's whatsmeow writes are refused with the fence's error and B's go
// through. A JID without a lease row is not fenced.
func TestFenceRefusesTheOldHoldersWrites(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	dbA, a := openSessions(t, uri, "a")
	dbB, b := openSessions(t, uri, "b")
	const jid = "628111:20@s.whatsapp.net"
	devA := linkSession(t, dbA, a, "dev", jid)

	leasesA, leasesB := postgres.NewLeases(dbA), postgres.NewLeases(dbB)
	// A holds the lease, briefly: it will be paused past it.
	if _, held, err := leasesA.Acquire(ctx, "dev", time.Millisecond); err != nil || !held {
		t.Fatalf("A's Acquire = %v, %v", held, err)
	}
	for what, err := range writes(ctx, devA) {
		if err != nil {
			t.Errorf("the holder's %s write: %v", what, err)
		}
	}
	devB, err := b.Container().GetDevice(ctx, *devA.ID)
	if err != nil || devB == nil {
		t.Fatalf("B cannot read the session: %v", err)
	}
	for what, err := range writes(ctx, devB) {
		if !postgres.Fenced(err) {
			t.Errorf("a %s write by a replica without the lease = %v, want the fence's error", what, err)
		}
	}

	// B takes the lapsed lease over (polling the database's clock).
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, held, err := leasesB.Acquire(ctx, "dev", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B never got the lapsed lease")
		}
	}
	for what, err := range writes(ctx, devA) {
		if !postgres.Fenced(err) {
			t.Errorf("the old holder's %s write = %v, want the fence's error", what, err)
		}
	}
	if err := a.Delete(jid); !errors.Is(err, postgres.ErrFenced) {
		t.Errorf("the old holder's Delete = %v, want ErrFenced", err)
	}
	for what, err := range writes(ctx, devB) {
		if err != nil {
			t.Errorf("the new holder's %s write: %v", what, err)
		}
	}

	// Released: nobody writes.
	if err := leasesB.Release(ctx, "dev"); err != nil {
		t.Fatal(err)
	}
	if err := devB.Save(ctx); !postgres.Fenced(err) {
		t.Errorf("a write to a released session = %v, want the fence's error", err)
	}

	// A session whose JID no lease names: not fenced, whoever writes.
	free := linkSession(t, dbA, a, "free", "628111:21@s.whatsapp.net")
	if _, err := dbA.Pool.Exec(ctx, `DELETE FROM gowa_devices WHERE id = 'free'`); err != nil {
		t.Fatal(err)
	}
	for what, err := range writes(ctx, free) {
		if err != nil {
			t.Errorf("a %s write to a session without a lease: %v", what, err)
		}
	}
}

// The fence reads the lease row FOR SHARE: a takeover cannot commit while
// the old holder's write is in flight, so no write slips in after it.
func TestFenceSerializesATakeoverWithAWriteInFlight(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	dbA, a := openSessions(t, uri, "a")
	dbB := open(t, uri, "b")
	const jid = "628111:22@s.whatsapp.net"
	linkSession(t, dbA, a, "dev", jid)
	setLease(t, dbA, "dev", "a")

	tx, err := dbA.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `INSERT INTO whatsmeow_sessions (our_jid, their_id, session) VALUES ($1, 'x', 'y')`, jid); err != nil {
		t.Fatal(err)
	}
	_, err = dbB.Pool.Exec(ctx, `SELECT 1 FROM gowa_leases WHERE device_id = 'dev' FOR UPDATE NOWAIT`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "55P03" {
		t.Fatalf("taking the lease row during a write in flight = %v, want lock_not_available", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	setLease(t, dbB, "dev", "b")
}

// The fence covers every whatsmeow table that holds a session's rows, is
// installed once however often it runs, and covers a table a later
// whatsmeow adds when it runs after that upgrade.
func TestFenceCoversEveryWhatsmeowTable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	db, s := openSessions(t, uri, "a")
	rows, err := db.Pool.Query(ctx, `
		SELECT c.relname FROM pg_class c
		WHERE c.relname LIKE 'whatsmeow\_%' AND c.relkind = 'r'
			AND NOT EXISTS (SELECT 1 FROM pg_trigger g WHERE g.tgrelid = c.oid AND g.tgname = 'gowa_fence')
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	var unfenced []string
	for rows.Next() {
		var n string
		_ = rows.Scan(&n)
		unfenced = append(unfenced, n)
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	// Neither holds a session's rows: the version, and the LID↔phone map
	// all sessions share.
	if want := []string{"whatsmeow_lid_map", "whatsmeow_version"}; !slices.Equal(unfenced, want) {
		t.Errorf("unfenced whatsmeow tables %v, want %v", unfenced, want)
	}
	var created int
	if err := db.Pool.QueryRow(ctx, `SELECT gowa_install_fences()`).Scan(&created); err != nil || created != 0 {
		t.Errorf("installing the fences again created %d triggers (%v)", created, err)
	}
	if _, err := db.Pool.Exec(ctx, `CREATE TABLE whatsmeow_future (our_jid TEXT REFERENCES whatsmeow_device(jid) ON DELETE CASCADE, v INT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := postgres.OpenSessions(ctx, db, nil); err != nil { // the next start, after whatsmeow's upgrade
		t.Fatal(err)
	}
	const jid = "628111:23@s.whatsapp.net"
	linkSession(t, db, s, "dev", jid)
	setLease(t, db, "dev", "b")
	_, err = db.Pool.Exec(ctx, `INSERT INTO whatsmeow_future VALUES ($1, 1)`, jid)
	if !postgres.Fenced(err) {
		t.Errorf("a write to a new whatsmeow table = %v, want the fence's error", err)
	}
}

// The fence's cost on a first login's prekey upload: whatsmeow inserts 812
// prekeys one statement (and transaction) each, and the fence looks up,
// and share-locks, the lease once per row. Each round times the same
// upload three ways, interleaved so that a busy machine weighs on all
// alike: the device leased to this replica, a device without a lease row,
// and the fence switched off on the prekey table. ms/op is per upload.
func BenchmarkFencePreKeys(b *testing.B) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.DB(b), postgres.Options{Holder: "a"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	s, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	modes := []string{"leased", "unleased", "unfenced"}
	devs := map[string][]*store.Device{}
	for range b.N {
		for _, mode := range modes {
			n := writeRound.Add(1)
			id := fmt.Sprintf("%s%d", mode, n)
			devs[mode] = append(devs[mode], linkSession(b, db, s, id, fmt.Sprintf("628%d:1@s.whatsapp.net", n)))
			if mode == "leased" {
				setLease(b, db, id, "a")
			}
		}
	}
	fence := func(on bool) {
		verb := "DISABLE"
		if on {
			verb = "ENABLE"
		}
		if _, err := db.Pool.Exec(ctx, `ALTER TABLE whatsmeow_pre_keys `+verb+` TRIGGER gowa_fence`); err != nil {
			b.Fatal(err)
		}
	}
	spent := map[string]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for _, mode := range modes {
			fence(mode != "unfenced")
			start := time.Now()
			if _, err := devs[mode][i].PreKeys.GetOrGenPreKeys(ctx, 812); err != nil {
				b.Fatal(err)
			}
			spent[mode] += time.Since(start)
		}
	}
	b.StopTimer()
	for _, mode := range modes {
		b.ReportMetric(float64(spent[mode].Milliseconds())/float64(b.N), mode+"-ms/op")
	}
	b.ReportMetric(0, "ns/op")
}
