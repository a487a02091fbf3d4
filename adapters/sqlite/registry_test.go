package sqlite_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

func openRegistry(t *testing.T, root string) *sqlite.Registry {
	t.Helper()
	r, err := sqlite.OpenRegistry(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	testRegistryContract(t, func(t *testing.T) ports.Registry { return openRegistry(t, t.TempDir()) })
}

// testRegistryContract checks what the device service relies on from any
// ports.Registry.
func testRegistryContract(t *testing.T, open func(*testing.T) ports.Registry) {
	ctx := context.Background()
	at := time.Date(2025, 3, 1, 12, 30, 45, 123456789, time.FixedZone("WIB", 7*3600))

	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		slots, err := open(t).List(ctx)
		if err != nil || len(slots) != 0 {
			t.Fatalf("List = %v, %v; want nothing", slots, err)
		}
	})

	t.Run("put list ordered by id", func(t *testing.T) {
		t.Parallel()
		r := open(t)
		for _, s := range []domain.Slot{
			{ID: "b", JID: "628111:1@s.whatsapp.net", CreatedAt: at},
			{ID: "a.1", CreatedAt: at.Add(time.Second)},
			{ID: "A", CreatedAt: at},
			{ID: "a"}, // the zero time survives too
		} {
			if err := r.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		slots, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.Slot{
			{ID: "A", CreatedAt: at},
			{ID: "a"},
			{ID: "a.1", CreatedAt: at.Add(time.Second)},
			{ID: "b", JID: "628111:1@s.whatsapp.net", CreatedAt: at},
		}
		assertSlots(t, slots, want)
	})

	t.Run("put updates", func(t *testing.T) {
		t.Parallel()
		r := open(t)
		mustPut(t, r, domain.Slot{ID: "x", CreatedAt: at})
		mustPut(t, r, domain.Slot{ID: "x", JID: "628111:2@s.whatsapp.net", CreatedAt: at})
		slots, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		assertSlots(t, slots, []domain.Slot{{ID: "x", JID: "628111:2@s.whatsapp.net", CreatedAt: at}})
		mustPut(t, r, domain.Slot{ID: "x", CreatedAt: at})
		slots, _ = r.List(ctx)
		assertSlots(t, slots, []domain.Slot{{ID: "x", CreatedAt: at}})
	})

	t.Run("delete", func(t *testing.T) {
		t.Parallel()
		r := open(t)
		mustPut(t, r, domain.Slot{ID: "x", CreatedAt: at})
		mustPut(t, r, domain.Slot{ID: "y", CreatedAt: at})
		for range 2 { // the second time, x is missing: still no error
			if err := r.Delete(ctx, "x"); err != nil {
				t.Fatal(err)
			}
		}
		slots, _ := r.List(ctx)
		assertSlots(t, slots, []domain.Slot{{ID: "y", CreatedAt: at}})
	})

	t.Run("empty id", func(t *testing.T) {
		t.Parallel()
		if err := open(t).Put(ctx, domain.Slot{}); domain.ErrorCode(err) != domain.EINVALID {
			t.Fatalf("Put without id = %v, want EINVALID", err)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		t.Parallel()
		r := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 20*3)
		for i := range 20 {
			wg.Go(func() {
				id := fmt.Sprintf("dev-%02d", i)
				if err := r.Put(ctx, domain.Slot{ID: id, CreatedAt: at}); err != nil {
					errs <- err
				}
				// Everyone also writes one shared slot and reads the lot.
				if err := r.Put(ctx, domain.Slot{ID: "shared", JID: fmt.Sprintf("628%d:1@s.whatsapp.net", i), CreatedAt: at}); err != nil {
					errs <- err
				}
				if _, err := r.List(ctx); err != nil {
					errs <- err
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		slots, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(slots) != 21 {
			t.Fatalf("got %d slots, want 21", len(slots))
		}
	})
}

func mustPut(t *testing.T, r ports.Registry, s domain.Slot) {
	t.Helper()
	if err := r.Put(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

func assertSlots(t *testing.T, got, want []domain.Slot) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d slots %v, want %v", len(got), got, want)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.ID != w.ID || g.JID != w.JID || !g.CreatedAt.Equal(w.CreatedAt) || g.Ended != w.Ended || !g.EndedAt.Equal(w.EndedAt) {
			t.Errorf("slot %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestRegistryPersistsAndIsPrivate(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	at := time.Now()
	r, err := sqlite.OpenRegistry(root)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, r, domain.Slot{ID: "keep", JID: "628111:3@s.whatsapp.net", CreatedAt: at})
	mustPut(t, r, domain.Slot{ID: "ended", CreatedAt: at, Ended: domain.ReasonRemovedOnPhone, EndedAt: at.Add(time.Hour)})
	for _, name := range []string{sqlite.RegistryFile, sqlite.RegistryFile + "-wal", sqlite.RegistryFile + "-shm"} {
		assertMode(t, filepath.Join(root, name), 0o600)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}

	r = openRegistry(t, root)
	slots, err := r.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	assertSlots(t, slots, []domain.Slot{
		{ID: "ended", CreatedAt: at, Ended: domain.ReasonRemovedOnPhone, EndedAt: at.Add(time.Hour)},
		{ID: "keep", JID: "628111:3@s.whatsapp.net", CreatedAt: at},
	})
}

func TestRegistryTightensLooseFile(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, sqlite.RegistryFile), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	openRegistry(t, root)
	assertMode(t, filepath.Join(root, sqlite.RegistryFile), 0o600)
}

func TestRegistrySchemaVersion(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	r, err := sqlite.OpenRegistry(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, sqlite.RegistryFile)
	if v := userVersion(t, path); v != 3 {
		t.Fatalf("user_version = %d, want 3", v)
	}

	// A database from a newer program is refused, not mangled.
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA user_version = 99`); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if r, err := sqlite.OpenRegistry(root); err == nil {
		_ = r.Close()
		t.Fatal("OpenRegistry accepted a schema from the future")
	}
}

func userVersion(t *testing.T, path string) int {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`PRAGMA user_version`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func assertMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != want {
		t.Errorf("%s: mode %o, want %o", path, got, want)
	}
}

// A registry written by the first schema gains the ended columns, its slots
// intact.
func TestRegistryMigratesVersion1(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(root, sqlite.RegistryFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`CREATE TABLE slots (id TEXT NOT NULL PRIMARY KEY, jid TEXT NOT NULL DEFAULT '', created_at TEXT NOT NULL)`,
		`INSERT INTO slots VALUES ('old', '628111:3@s.whatsapp.net', '2025-01-02T03:04:05Z')`,
		`PRAGMA user_version = 1`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	r := openRegistry(t, root)
	slots, err := r.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	assertSlots(t, slots, []domain.Slot{{ID: "old", JID: "628111:3@s.whatsapp.net", CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}})
}
