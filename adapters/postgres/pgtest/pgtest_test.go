package pgtest_test

import (
	"context"
	"os"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestDatabasesAreSeparateAndUsable(t *testing.T) {
	ctx := context.Background()
	a, b := pgtest.DB(t), pgtest.DB(t)
	if a == b {
		t.Fatalf("two tests got one database: %s", a)
	}
	conn, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE x (v int); INSERT INTO x VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT v FROM x").Scan(&v); err != nil || v != 7 {
		t.Fatalf("read back %d, %v", v, err)
	}
}

func TestStopAndStartAgain(t *testing.T) {
	ctx := context.Background()
	c := pgtest.New(t)
	uri := c.NewDB(t)
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if conn, err := pgx.Connect(ctx, uri); err == nil {
		conn.Close(ctx)
		t.Fatal("connected to a stopped cluster")
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	conn.Close(ctx)
}

// TestStartClusterOutsideATest: the variant for the benchmarks starts a
// cluster with no testing.TB, creates usable databases on it, and Close
// stops it.
func TestStartClusterOutsideATest(t *testing.T) {
	pgtest.Require(t)
	ctx := context.Background()
	c, err := pgtest.StartCluster()
	if err != nil {
		t.Fatal(err)
	}
	uri, err := c.CreateDB(ctx)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		c.Close()
		t.Fatal(err)
	}
	var one int
	err = conn.QueryRow(ctx, "SELECT 1").Scan(&one)
	conn.Close(ctx)
	if err != nil || one != 1 {
		c.Close()
		t.Fatalf("SELECT 1: %d, %v", one, err)
	}
	c.Close()
	if conn, err := pgx.Connect(ctx, uri); err == nil {
		conn.Close(ctx)
		t.Fatal("connected after Close")
	}
}
