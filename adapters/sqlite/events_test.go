package sqlite_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestEventStoreContract(t *testing.T) {
	t.Parallel()
	dirs := map[portstest.EventStore]string{}
	open := func(t *testing.T) portstest.EventStore {
		dir := t.TempDir()
		e, err := sqlite.OpenEvents(dir)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Close() })
		dirs[e] = dir
		return e
	}
	reopen := func(t *testing.T, s portstest.EventStore) portstest.EventStore {
		if err := s.(*sqlite.Events).Close(); err != nil {
			t.Fatal(err)
		}
		e, err := sqlite.OpenEvents(dirs[s])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Close() })
		return e
	}
	portstest.EventStoreSuite(t, open, reopen)
}

func TestEventsFileIsPrivate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	e, err := sqlite.OpenEvents(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	fi, err := os.Stat(filepath.Join(dir, sqlite.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("events.db mode %v, want 0600 (webhook secrets live in it)", fi.Mode().Perm())
	}
}
