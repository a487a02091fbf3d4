// Package pgtest runs throwaway PostgreSQL clusters for tests: initdb into a
// temporary folder, pg_ctl start on a loopback port, and everything removed
// afterwards. It uses Debian's postgresql package (the binaries under
// /usr/lib/postgresql/<version>/bin, or pg_config --bindir). PostgreSQL
// refuses to run as root, so when the tests run as root the cluster runs as
// the package's postgres user.
//
// Without the binaries the tests that need them skip with a message saying
// so, unless the environment variable CI is set: there they fail.
//
// A package's tests share one cluster, started on first use; its TestMain
// calls Main so that the cluster is stopped when they end:
//
//	func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }
//
// DB gives each test a database of its own on it. A test that stops and
// starts PostgreSQL (a failover test) makes its own cluster with New.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is one running PostgreSQL cluster.
type Cluster struct {
	bin  string // folder of initdb, pg_ctl, postgres
	dir  string // the temporary folder: data/ and the socket
	data string
	port int
	cred *syscall.Credential // nil when not root
	mu   sync.Mutex
	up   bool
}

// Binaries returns the folder holding PostgreSQL's server binaries, or an
// error saying what is missing.
func Binaries() (string, error) {
	if dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin"); len(dirs) > 0 {
		sort.Slice(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
		for _, d := range dirs {
			if isExec(filepath.Join(d, "initdb")) && isExec(filepath.Join(d, "pg_ctl")) {
				return d, nil
			}
		}
	}
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		d := strings.TrimSpace(string(out))
		if isExec(filepath.Join(d, "initdb")) {
			return d, nil
		}
	}
	return "", errors.New("PostgreSQL's server binaries (initdb, pg_ctl) are not installed: apt-get install postgresql")
}

func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func isExec(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode()&0o111 != 0
}

// Require skips t when PostgreSQL is not installed, or fails it in CI.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binaries()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("CI must run the PostgreSQL tests: %v", err)
		}
		t.Skipf("skipping: %v (CI runs these tests)", err)
	}
	return bin
}

// New starts a cluster of t's own, stopped and removed when t ends.
func New(t testing.TB) *Cluster {
	t.Helper()
	bin := Require(t)
	c, err := start(bin)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(c.remove)
	return c
}

// StartCluster starts a cluster outside a test (the benchmarks run one):
// the caller stops and removes it with Close. It fails, saying what is
// missing, when PostgreSQL is not installed.
func StartCluster() (*Cluster, error) {
	bin, err := Binaries()
	if err != nil {
		return nil, err
	}
	return start(bin)
}

// Close stops c at once and removes its folder.
func (c *Cluster) Close() { c.remove() }

// CreateDB creates a new, empty database on c and returns its URI. Unlike
// NewDB it is not dropped by anyone: it goes with the cluster.
func (c *Cluster) CreateDB(ctx context.Context) (string, error) {
	name := "b_" + randomHex(6)
	if err := c.exec(ctx, "CREATE DATABASE "+name); err != nil {
		return "", fmt.Errorf("create database: %w", err)
	}
	return c.URI(name), nil
}

var (
	sharedMu  sync.Mutex
	shared    *Cluster
	sharedErr error
)

// Main runs the tests, then stops and removes the shared cluster if one was
// started. Call it from TestMain.
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	if shared != nil {
		shared.remove()
	}
	sharedMu.Unlock()
	return code
}

// Shared returns the package's shared cluster, starting it on first use.
func Shared(t testing.TB) *Cluster {
	t.Helper()
	bin := Require(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start(bin)
	}
	if sharedErr != nil {
		t.Fatalf("start PostgreSQL: %v", sharedErr)
	}
	return shared
}

// DB creates a new, empty database on the shared cluster and returns its
// URI; the database is dropped when t ends.
func DB(t testing.TB) string {
	t.Helper()
	return Shared(t).NewDB(t)
}

// NewDB creates a new, empty database on c and returns its URI; it is
// dropped when t ends.
func (c *Cluster) NewDB(t testing.TB) string {
	t.Helper()
	name := "t_" + randomHex(6)
	if err := c.exec(context.Background(), "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	t.Cleanup(func() {
		c.mu.Lock()
		up := c.up
		c.mu.Unlock()
		if up {
			_ = c.exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		}
	})
	return c.URI(name)
}

// URI is the connection URI of database name on c.
func (c *Cluster) URI(name string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable", c.port, name)
}

// Port is the loopback port c listens on.
func (c *Cluster) Port() int { return c.port }

func (c *Cluster) exec(ctx context.Context, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.URI("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

func start(bin string) (*Cluster, error) {
	c := &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			return nil, fmt.Errorf("running as root, PostgreSQL needs the postgres user (from the postgresql package): %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		c.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	dir, err := os.MkdirTemp("", "gowa-pg-")
	if err != nil {
		return nil, err
	}
	c.dir, c.data = dir, filepath.Join(dir, "data")
	if c.cred != nil {
		if err := os.Chown(dir, int(c.cred.Uid), int(c.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if out, err := c.run("initdb", "-D", c.data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("initdb: %w: %s", err, out)
	}
	// A free port can be taken between the choice and the bind: try others.
	for attempt := 0; ; attempt++ {
		n, _ := rand.Int(rand.Reader, big.NewInt(20000))
		c.port = 30000 + int(n.Int64())
		if !portFree(c.port) {
			continue
		}
		err := c.Start()
		if err == nil {
			return c, nil
		}
		if attempt == 4 {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

// Start starts c (again) on its port and waits until it accepts connections.
func (c *Cluster) Start() error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c max_connections=400 -c fsync=off -c full_page_writes=off -c synchronous_commit=off", c.port, c.dir)
	if out, err := c.run("pg_ctl", "start", "-w", "-t", "60", "-D", c.data, "-l", filepath.Join(c.dir, "log"), "-o", opts); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "log"))
		return fmt.Errorf("pg_ctl start: %w: %s %s", err, out, tail(log))
	}
	c.mu.Lock()
	c.up = true
	c.mu.Unlock()
	return nil
}

// Stop stops c at once, cutting every connection (pg_ctl's fast mode).
func (c *Cluster) Stop() error {
	c.mu.Lock()
	c.up = false
	c.mu.Unlock()
	if out, err := c.run("pg_ctl", "stop", "-w", "-t", "60", "-m", "fast", "-D", c.data); err != nil {
		return fmt.Errorf("pg_ctl stop: %w: %s", err, out)
	}
	return nil
}

func (c *Cluster) remove() {
	_, _ = c.run("pg_ctl", "stop", "-w", "-t", "60", "-m", "immediate", "-D", c.data)
	os.RemoveAll(c.dir)
}

func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(filepath.Join(c.bin, name), args...)
	cmd.Dir = c.dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	if c.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: c.cred}
	}
	return cmd.CombinedOutput()
}

func portFree(port int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
