package postgres_test

import (
	"context"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

// open opens a replica's pool on uri, closed when t ends.
func open(t *testing.T, uri, holder string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(context.Background(), uri, postgres.Options{Holder: holder})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

func TestOpenMigratesOnceWhateverTheReplicas(t *testing.T) {
	uri := pgtest.DB(t)
	var wg sync.WaitGroup
	for _, h := range []string{"a", "b", "c"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := postgres.Open(context.Background(), uri, postgres.Options{Holder: h})
			if err != nil {
				t.Error(err)
				return
			}
			db.Close()
		}()
	}
	wg.Wait()
	db := open(t, uri, "d")
	var holder string
	if err := db.Pool.QueryRow(context.Background(), `SELECT current_setting('gowa.holder')`).Scan(&holder); err != nil || holder != "d" {
		t.Fatalf("gowa.holder = %q, %v", holder, err)
	}
}

func TestOpenKeepsPasswordsOutOfErrors(t *testing.T) {
	_, err := postgres.Open(context.Background(), "postgres://u:s3cret@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", postgres.Options{Holder: "a"})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	if got := err.Error(); strings.Contains(got, "s3cret") {
		t.Fatalf("the password is in the error: %s", got)
	}
}
