package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// runMigrate runs `whatsapp migrate` and returns what it printed.
func runMigrate(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), append([]string{"migrate"}, args...), &out, &errOut)
	return out.String(), err
}

// digest fingerprints every table of the database: whatsmeow's and gowa's.
func digest(t *testing.T, uri string) map[string]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND (table_name LIKE 'whatsmeow%' OR table_name LIKE 'gowa%')`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		var d string
		q := `SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM ` + pgx.Identifier{n}.Sanitize() + ` t`
		if err := conn.QueryRow(ctx, q).Scan(&d); err != nil {
			t.Fatal(err)
		}
		out[n] = d
	}
	return out
}

// A storage folder with two linked sessions moves into PostgreSQL; the
// sessions then open from there and connect to the simulated network as
// they are, without pairing again. A second run copies nothing.
func TestMigrateMovesLinkedSessions(t *testing.T) {
	t.Parallel()
	dir, jids := linkedCopy(t)
	uri := pgtest.DB(t)
	// dev2's pairing was cut off by a crash after the phone linked it: its
	// session is still in the pairing folder.
	if err := os.Rename(filepath.Join(dir, jids["dev2"]), filepath.Join(dir, ".pairing", "dev2-0123456789abcdef")); err != nil {
		t.Fatal(err)
	}
	// dev's webhook.
	hook := domain.Webhook{DeviceID: "dev", URL: "http://127.0.0.1:9/hook", Secret: "migrate-secret-0123456789", Events: domain.TypeFilter{"message.received"}}
	src, err := sqlite.OpenEvents(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := src.PutWebhook(context.Background(), hook); err != nil {
		t.Fatal(err)
	}
	// A message to dev that its webhook has not been sent yet: a pending
	// delivery, after the events of the linking.
	msg := domain.LiveEvent{Type: domain.EventMessageReceived, DeviceID: "dev", Time: time.Now(), Data: []byte(`{"text":"hi"}`)}
	if _, err := src.Append(context.Background(), []domain.LiveEvent{msg}, func(domain.LiveEvent) []string { return []string{"device:dev"} }); err != nil {
		t.Fatal(err)
	}
	events, err := src.Read(context.Background(), 0, 1000)
	if err != nil || len(events) < 2 {
		t.Fatalf("the folder's event log: %d events, %v", len(events), err)
	}
	_ = src.Close()
	// And a pairing that never linked: nothing to move.
	if err := os.MkdirAll(filepath.Join(dir, ".pairing", "dev3-0123456789abcdef"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".pairing", "dev3-0123456789abcdef", "session.db"), nil, 0o600); err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	out, err := runMigrate(t, "--from", dir, "--to", uri)
	if err != nil {
		t.Fatalf("migrate: %v\n%s", err, out)
	}
	t.Logf("migrate of 2 linked sessions took %v", time.Since(began))
	if strings.Contains(out, hook.Secret) {
		t.Errorf("migrate printed a webhook secret:\n%s", out)
	}
	if !strings.Contains(out, fmt.Sprintf("sessions: 2 copied, 0 skipped; devices: 2 copied, 0 skipped; event log: %d events, 1 pending deliveries, 1 webhooks copied", len(events))) ||
		!strings.Contains(out, "pairings cut off before the phone linked them: 1") {
		t.Fatalf("migrate reported:\n%s", out)
	}
	before := digest(t, uri)
	began = time.Now()
	out, err = runMigrate(t, "--from", dir, "--to", uri)
	t.Logf("a second migrate took %v", time.Since(began))
	if err != nil {
		t.Fatalf("migrate again: %v\n%s", err, out)
	}
	if !strings.Contains(out, "sessions: 0 copied, 2 skipped; devices: 0 copied, 2 skipped; event log: skipped (imported before)") {
		t.Fatalf("migrate again reported:\n%s", out)
	}
	if after := digest(t, uri); !maps.Equal(before, after) {
		t.Errorf("a second migrate changed the database:\nbefore %v\nafter  %v", before, after)
	}

	// A replica on the database: the sessions are there, for their slots,
	// and connect.
	ctx := context.Background()
	db, err := postgres.Open(ctx, uri, postgres.Options{Holder: "r1"})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sessions, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	stored, err := sessions.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	want := []ports.StoredSession{{JID: jids["dev"], Key: jids["dev"], DeviceID: "dev"}, {JID: jids["dev2"], Key: jids["dev2"], DeviceID: "dev2"}}
	slices.SortFunc(want, func(a, b ports.StoredSession) int { return strings.Compare(a.Key, b.Key) })
	if !slices.Equal(stored, want) {
		t.Fatalf("Sessions = %+v, want %+v", stored, want)
	}
	hooks, err := postgres.NewEvents(db).ListWebhooks(ctx)
	if err != nil || len(hooks) != 1 || hooks[0].DeviceID != hook.DeviceID || hooks[0].URL != hook.URL || hooks[0].Secret != hook.Secret || !slices.Equal(hooks[0].Events, hook.Events) {
		t.Errorf("webhooks in PostgreSQL: %+v, %v; want %+v", hooks, err, hook)
	}
	// The event log keeps its ids and order, and the delivery stays
	// pending; the next event goes on after the folder's.
	pgEvents := postgres.NewEvents(db)
	moved, err := pgEvents.Read(ctx, 0, 1000)
	if err != nil || len(moved) != len(events) {
		t.Fatalf("PostgreSQL's event log: %d events, %v; want %d", len(moved), err, len(events))
	}
	for i := range moved {
		if moved[i].ID != events[i].ID || moved[i].Type != events[i].Type || moved[i].DeviceID != events[i].DeviceID {
			t.Fatalf("event %d moved as %+v, was %+v", i, moved[i], events[i])
		}
	}
	pend, err := pgEvents.Pending(ctx, "device:dev", nil, 10)
	if err != nil || len(pend) != 1 || pend[0].EventID != events[len(events)-1].ID {
		t.Fatalf("pending deliveries in PostgreSQL: %+v, %v; want the message's", pend, err)
	}
	if _, last, err := pgEvents.Bounds(ctx); err != nil || last != events[len(events)-1].ID {
		t.Fatalf("PostgreSQL's last event id %d, %v; want %d", last, err, events[len(events)-1].ID)
	}
	var slots int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM gowa_devices WHERE (id = 'dev' AND jid = $1) OR (id = 'dev2' AND jid = $2)`, jids["dev"], jids["dev2"]).Scan(&slots); err != nil || slots != 2 {
		t.Fatalf("%d slots with their JIDs in gowa_devices (%v)", slots, err)
	}
	sim, err := wasim.New(wasim.Options{Dir: filepath.Join(dir, ".wasim")})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	root := wasim.RootPublicKey()
	wa := whatsapp.New(whatsapp.Options{
		OS: "gowa-test", CertRoot: &root, HTTPClient: sim.HTTPClient(),
		Shared: &whatsapp.SharedStore{Container: sessions.Container(), Pairings: sessions},
	})
	for _, st := range stored {
		connected := make(chan struct{})
		var once sync.Once
		cctx, cancel := context.WithCancel(ctx)
		c, err := wa.Open(cctx, st.Key, func(ev domain.Event) {
			if _, ok := ev.(domain.Connected); ok {
				once.Do(func() { close(connected) })
			}
		})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if id, ok := c.Identity(); !ok || id.JID != st.JID {
			t.Errorf("the session of %s opens as %+v", st.JID, id)
		}
		if err := c.Connect(cctx); err != nil {
			t.Fatal(err)
		}
		select {
		case <-connected:
		case <-time.After(60 * time.Second):
			t.Errorf("the migrated session %s did not connect", st.JID)
		}
		_ = c.Close()
		cancel()
	}
}

// migrate refuses a folder a gateway holds, says so in one line, and
// keeps a password out of what it prints.
func TestMigrateRefusesAFolderInUse(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	_, err = runMigrate(t, "--from", dir, "--to", "postgres://u:s3cret@127.0.0.1:1/x")
	if err == nil || !strings.Contains(err.Error(), "in use by another gateway") {
		t.Fatalf("migrate of a locked folder = %v", err)
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)

	var stderr bytes.Buffer
	err = run(context.Background(), []string{"migrate", "--from", dir, "--to", "postgres://u:s3cret@127.0.0.1:1/x?connect_timeout=1"}, &bytes.Buffer{}, &stderr)
	if code := report(err, &stderr); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if got := stderr.String(); strings.Contains(got, "s3cret") || strings.Count(got, "\n") != 1 {
		t.Errorf("migrate printed %q: one line, no password", got)
	}
	if _, err := runMigrate(t, "--from", dir); err == nil || !strings.Contains(err.Error(), "--to is required") {
		t.Errorf("migrate without --to = %v", err)
	}
}
