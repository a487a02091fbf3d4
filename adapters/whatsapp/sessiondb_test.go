package whatsapp

import (
	"database/sql"
	"os"
	"path/filepath"
	"testing"
)

// A new session database starts as a copy of the empty session: whatsmeow's
// schema is already there (so Open has no upgrade to run), no device is,
// and the file is private.
func TestNewSessionStartsWithTheSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "session.db")
	if err := createPrivate(path); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() == 0 {
		t.Fatalf("new session file: mode %o, %d bytes", fi.Mode().Perm(), fi.Size())
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var mode string
	if err := db.QueryRow(`PRAGMA journal_mode`).Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal mode %q, %v", mode, err)
	}
	var version, devices int
	if err := db.QueryRow(`SELECT version FROM whatsmeow_version`).Scan(&version); err != nil || version == 0 {
		t.Fatalf("schema version %d, %v", version, err)
	}
	if err := db.QueryRow(`SELECT COUNT(*) FROM whatsmeow_device`).Scan(&devices); err != nil || devices != 0 {
		t.Fatalf("%d devices, %v", devices, err)
	}
	// An existing file is left alone.
	if err := os.WriteFile(path, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := createPrivate(path); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "x" {
		t.Fatal("createPrivate overwrote an existing file")
	}
}
