package postgres_test

import (
	"bytes"
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
)

func exec(t *testing.T, db *postgres.DB, sql string, args ...any) {
	t.Helper()
	if _, err := db.Pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Any replica lists what each device's holder wrote; a device nobody
// wrote for shows what its slot says; a replica that does not hold a
// device cannot overwrite its status.
func TestStatusTable(t *testing.T) {
	ctx := context.Background()
	uri := pgtest.DB(t)
	a, b := open(t, uri, "rep-a"), open(t, uri, "rep-b")
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, id := range []string{"d1", "d2", "d3", "d4"} {
		exec(t, a, `INSERT INTO gowa_devices (id, created_at) VALUES ($1, $2)`, id, created)
	}
	exec(t, a, `UPDATE gowa_devices SET jid = '6281:1@s.whatsapp.net' WHERE id = 'd3'`)
	exec(t, a, `UPDATE gowa_devices SET ended = 'logged_out_remotely', ended_at = $1 WHERE id = 'd4'`, created.Add(time.Hour))
	exec(t, a, `INSERT INTO gowa_leases (device_id, holder, token, expires_at) VALUES ('d1', 'rep-a', 1, now() + interval '1 minute'), ('d2', 'rep-b', 2, now() + interval '1 minute')`)

	since := time.Date(2026, 1, 2, 4, 0, 0, 0, time.UTC)
	conn := domain.Status{DeviceID: "d1", State: domain.StateConnected, LoggedIn: true, Connected: true, Since: since,
		Identity: domain.Identity{JID: "6282:3@s.whatsapp.net", Phone: "6282", PushName: "Ann", Platform: "android"}}
	pairing := domain.Status{DeviceID: "d2", State: domain.StatePairing, Since: since,
		Pairing: &domain.Pairing{Method: domain.PairingQR, QR: "secret-qr-text", ExpiresAt: since.Add(time.Minute)}}
	if err := postgres.NewStatuses(a).Put(ctx, conn, pairing); err != nil {
		t.Fatal(err)
	}
	if err := postgres.NewStatuses(b).Put(ctx, pairing); err != nil {
		t.Fatal(err)
	}
	var qrStored int
	if err := a.Pool.QueryRow(ctx, `SELECT count(*) FROM gowa_device_status WHERE device_id = 'd2' AND holder = 'rep-b'`).Scan(&qrStored); err != nil || qrStored != 1 {
		t.Fatalf("d2 written by its holder: %d, %v", qrStored, err)
	}

	sts, err := postgres.NewStatuses(b).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(sts) != 4 {
		t.Fatalf("listed %d devices, want 4: %+v", len(sts), sts)
	}
	if got := sts[0]; got.State != domain.StateConnected || !got.Connected || got.Identity != conn.Identity || !got.Since.Equal(since) || !got.CreatedAt.Equal(created) {
		t.Errorf("d1: %+v", got)
	}
	if got := sts[1]; got.State != domain.StatePairing || got.Pairing == nil || got.Pairing.Method != domain.PairingQR || got.Pairing.QR != "" || !got.Pairing.ExpiresAt.Equal(since.Add(time.Minute)) {
		t.Errorf("d2 (the QR text must not be stored): %+v %+v", got, got.Pairing)
	}
	if got := sts[2]; got.State != domain.StateConnecting || !got.LoggedIn || got.Identity.JID != "6281:1@s.whatsapp.net" {
		t.Errorf("d3, a session nobody wrote for yet: %+v", got)
	}
	if got := sts[3]; got.State != domain.StateLoggedOut || got.Reason != "logged_out_remotely" {
		t.Errorf("d4, ended: %+v", got)
	}

	// rep-b does not hold d1: its late write is refused.
	stale := conn
	stale.State, stale.Connected = domain.StateOffline, false
	if err := postgres.NewStatuses(b).Put(ctx, stale); err != nil {
		t.Fatal(err)
	}
	got, found, err := postgres.NewStatuses(b).Get(ctx, "d1")
	if err != nil || !found || got.State != domain.StateConnected {
		t.Errorf("d1 after a write by a replica that does not hold it: %+v %v %v", got, found, err)
	}
	if _, found, err := postgres.NewStatuses(b).Get(ctx, "nope"); found || err != nil {
		t.Errorf("an unregistered device: found %v, %v", found, err)
	}
}

// The writer coalesces marks, writes each device once with its status at
// the time of the write, skips devices no longer here, and keeps its
// marks while the write fails.
func TestStatusWriter(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	uri := pgtest.DB(t)
	db := open(t, uri, "rep-a")
	exec(t, db, `INSERT INTO gowa_devices (id, created_at) VALUES ('w1', now()), ('w2', now())`)
	var state atomic.Value
	state.Store(domain.StateConnecting)
	var lookups atomic.Int32
	w := postgres.NewStatusWriter(postgres.NewStatuses(db), func(id string) (domain.Status, bool) {
		lookups.Add(1)
		if id != "w1" {
			return domain.Status{}, false
		}
		return domain.Status{DeviceID: id, State: state.Load().(domain.State), Since: time.Now()}, true
	}, nil, 10*time.Millisecond)
	for range 100 {
		w.Mark("w1")
	}
	w.Mark("w2")
	state.Store(domain.StateConnected)
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if n := lookups.Load(); n != 2 {
		t.Errorf("%d lookups for 101 marks of 2 devices", n)
	}
	st, _, err := postgres.NewStatuses(db).Get(ctx, "w1")
	if err != nil || st.State != domain.StateConnected {
		t.Errorf("w1: %+v, %v", st, err)
	}

	// Run writes in the background.
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	state.Store(domain.StateOffline)
	w.Mark("w1")
	waitFor(t, "w1 written offline", func() bool {
		st, _, err = postgres.NewStatuses(db).Get(ctx, "w1")
		return err == nil && st.State == domain.StateOffline
	})
	cancel()
	<-done
}

// Every replica gets the same shared key, made once.
func TestClusterKey(t *testing.T) {
	uri := pgtest.DB(t)
	a, b := open(t, uri, "a"), open(t, uri, "b")
	ka, err := a.ClusterKey(context.Background(), "forward")
	if err != nil {
		t.Fatal(err)
	}
	kb, err := b.ClusterKey(context.Background(), "forward")
	if err != nil {
		t.Fatal(err)
	}
	if len(ka) != 32 || !bytes.Equal(ka, kb) {
		t.Errorf("keys differ or are short: %x %x", ka, kb)
	}
}

// A NOTIFY from one replica wakes a listener on another.
func TestListenNotify(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	uri := pgtest.DB(t)
	a, b := open(t, uri, "a"), open(t, uri, "b")
	wake := a.Listen(ctx, "gowa_test")
	select {
	case <-wake: // the first wake-up: listening
	case <-time.After(60 * time.Second):
		t.Fatal("never listening")
	}
	if err := b.Notify(ctx, "gowa_test"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-wake:
	case <-time.After(60 * time.Second):
		t.Fatal("the NOTIFY never woke the listener")
	}
}
