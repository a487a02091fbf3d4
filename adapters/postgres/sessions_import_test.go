package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	signallog "go.mau.fi/libsignal/logger"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
)

// sqliteSession makes a whatsmeow session database in SQLite at path,
// linked as jid, with an identity and a Signal session of a contact: what
// a storage folder's session.db holds.
func sqliteSession(t *testing.T, path, jid string) {
	t.Helper()
	ctx := context.Background()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := sqlstore.NewWithDB(db, "sqlite", nil)
	if err := c.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	dev := c.NewDevice()
	saveDevice(t, c, dev, jid)
	if err := dev.Identities.PutIdentity(ctx, "4915550001111.0:0", [32]byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := dev.Sessions.PutSession(ctx, "4915550001111.0:0", []byte("a signal session")); err != nil {
		t.Fatal(err)
	}
}

// rowCounts counts the rows of a session's device and identities in
// PostgreSQL.
func rowCounts(t *testing.T, db *postgres.DB, jid string) (devices, identities, sessions int) {
	t.Helper()
	ctx := context.Background()
	err := db.Pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM whatsmeow_device WHERE jid = $1),
		(SELECT count(*) FROM whatsmeow_identity_keys WHERE our_jid = $1),
		(SELECT count(*) FROM whatsmeow_sessions WHERE our_jid = $1)`, jid).Scan(&devices, &identities, &sessions)
	if err != nil {
		t.Fatal(err)
	}
	return devices, identities, sessions
}

// A folder's session database moves into PostgreSQL whole, for its slot,
// and opens from there; again, nothing is copied.
func TestImportSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const jid = "4915550009999:7@s.whatsapp.net"
	path := filepath.Join(t.TempDir(), jid, "session.db")
	sqliteSession(t, path, jid)
	db, s := openSessions(t, pgtest.DB(t), "migrate")

	got, err := s.ImportSession(ctx, path, jid, "dev")
	if err != nil || got != (postgres.ImportedSession{JID: jid, Copied: true}) {
		t.Fatalf("ImportSession = %+v, %v", got, err)
	}
	if d, i, ss := rowCounts(t, db, jid); d != 1 || i != 1 || ss != 1 {
		t.Fatalf("PostgreSQL holds %d devices, %d identities, %d sessions of %s; want 1 each", d, i, ss, jid)
	}
	stored, err := s.Sessions()
	if err != nil || len(stored) != 1 || stored[0].JID != jid || stored[0].Key != jid || stored[0].DeviceID != "dev" {
		t.Fatalf("Sessions = %+v, %v", stored, err)
	}
	id, _ := types.ParseJID(jid)
	dev, err := s.Container().GetDevice(ctx, id)
	if err != nil || dev == nil {
		t.Fatalf("the imported device does not open: %v", err)
	}
	if sess, err := dev.Sessions.GetSession(ctx, "4915550001111.0:0"); err != nil || string(sess) != "a signal session" {
		t.Fatalf("the imported Signal session = %q, %v", sess, err)
	}

	// Again, after the session moved on in PostgreSQL: nothing copied,
	// nothing overwritten.
	if err := dev.Sessions.PutSession(ctx, "4915550001111.0:0", []byte("moved on")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ImportSession(ctx, path, jid, "dev"); err != nil || got != (postgres.ImportedSession{JID: jid}) {
		t.Fatalf("a second ImportSession = %+v, %v", got, err)
	}
	if sess, _ := dev.Sessions.GetSession(ctx, "4915550001111.0:0"); string(sess) != "moved on" {
		t.Fatalf("a second import overwrote the session: %q", sess)
	}
}

// A pairing cut off by a crash: one the phone linked is imported under the
// JID it holds; one never linked holds nothing and is left.
func TestImportSessionOfACutOffPairing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	const jid = "4915550008888:3@s.whatsapp.net"
	linked := filepath.Join(dir, "dev-0123456789abcdef", "session.db")
	sqliteSession(t, linked, jid)
	never := filepath.Join(dir, "dev2-0123456789abcdef", "session.db")
	if err := os.MkdirAll(filepath.Dir(never), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(never, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	db, s := openSessions(t, pgtest.DB(t), "migrate")

	if got, err := s.ImportSession(ctx, never, "", "dev2"); err != nil || got != (postgres.ImportedSession{}) {
		t.Fatalf("ImportSession of a pairing never linked = %+v, %v", got, err)
	}
	if fi, err := os.Stat(never); err != nil || fi.Size() != 0 {
		t.Fatalf("a pairing never linked was written to: %v, %v", fi, err)
	}
	if got, err := s.ImportSession(ctx, linked, "", "dev"); err != nil || got != (postgres.ImportedSession{JID: jid, Copied: true}) {
		t.Fatalf("ImportSession of a linked pairing = %+v, %v", got, err)
	}
	if d, i, ss := rowCounts(t, db, jid); d != 1 || i != 1 || ss != 1 {
		t.Fatalf("PostgreSQL holds %d devices, %d identities, %d sessions of %s; want 1 each", d, i, ss, jid)
	}
}

// Refused, copying nothing: a database holding another device than its
// folder says, a whatsmeow schema version PostgreSQL is not at, and a
// session whose device a replica holds the lease of.
func TestImportSessionRefuses(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const jid = "4915550007777:2@s.whatsapp.net"
	path := filepath.Join(t.TempDir(), jid, "session.db")
	sqliteSession(t, path, jid)

	db, s := openSessions(t, pgtest.DB(t), "migrate")
	if _, err := s.ImportSession(ctx, path, "4915550006666:2@s.whatsapp.net", "dev"); err == nil {
		t.Error("a session database holding another device was imported")
	}
	if _, err := db.Pool.Exec(ctx, `UPDATE whatsmeow_version SET version = version + 1`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportSession(ctx, path, jid, "dev"); err == nil {
		t.Error("a session at another whatsmeow schema version was imported")
	}
	if d, _, _ := rowCounts(t, db, jid); d != 0 {
		t.Fatalf("a refused import copied the device")
	}

	// A replica runs the device already (its slot has the JID and a lease).
	db2, s2 := openSessions(t, pgtest.DB(t), "migrate")
	if _, err := db2.Pool.Exec(ctx, `INSERT INTO gowa_devices (id, jid, created_at) VALUES ('dev', $1, now())`, jid); err != nil {
		t.Fatal(err)
	}
	if _, err := db2.Pool.Exec(ctx, `INSERT INTO gowa_leases (device_id, holder, token, expires_at) VALUES ('dev', 'replica-1', nextval('gowa_lease_token'), now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.ImportSession(ctx, path, jid, "dev"); !errors.Is(err, postgres.ErrFenced) {
		t.Fatalf("import of a leased device = %v, want ErrFenced", err)
	}
	if d, i, ss := rowCounts(t, db2, jid); d+i+ss != 0 {
		t.Fatalf("a fenced import left %d rows", d+i+ss)
	}
}

// Registry.Import creates a slot once and leaves a slot that is there as
// it is.
func TestRegistryImport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := postgres.NewRegistry(open(t, pgtest.DB(t), "migrate"))
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	slot := domain.Slot{ID: "dev", JID: "4915550005555:1@s.whatsapp.net", CreatedAt: at}
	if created, err := r.Import(ctx, slot); err != nil || !created {
		t.Fatalf("Import = %v, %v", created, err)
	}
	changed := slot
	changed.JID = ""
	if created, err := r.Import(ctx, changed); err != nil || created {
		t.Fatalf("Import of a slot that is there = %v, %v", created, err)
	}
	if got, ok, err := r.Get(ctx, "dev"); err != nil || !ok || got.JID != slot.JID {
		t.Fatalf("after a second Import: %+v, %v, %v", got, ok, err)
	}
	if _, err := r.Import(ctx, domain.Slot{ID: "dev2", JID: slot.JID, CreatedAt: at}); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Fatalf("Import of a slot with another's JID = %v, want ECONFLICT", err)
	}
}

// libsignal makes its package-wide logger lazily, on first use and without
// synchronisation: the parallel tests that make whatsmeow devices (keys
// signed at once) race on it. One installed before any test runs closes
// that race (adapters/wasim does the same for the simulator).
func init() {
	if signallog.Logger == nil {
		signallog.Logger = quietSignalLog{}
	}
}

// quietSignalLog drops libsignal's messages.
type quietSignalLog struct{}

func (quietSignalLog) Debug(string, string)   {}
func (quietSignalLog) Info(string, string)    {}
func (quietSignalLog) Warning(string, string) {}
func (quietSignalLog) Error(string, string)   {}
func (quietSignalLog) Configure(string)       {}
