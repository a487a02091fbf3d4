package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	_ "modernc.org/sqlite" // the "sqlite" driver whatsmeow's store opens

	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// floorConcurrency is the device service's default RestoreConcurrency:
// the floor connects as many clients at once as the gateway does.
const floorConcurrency = 16

// floorMain is the hidden subcommand "floor": the simulator process at
// -sim (or, without it, one opened in this process on the copy's .wasim
// folder) and one bare whatsmeow client per session.db under
// -dir, connected at most floorConcurrency at a time, exactly as the gateway
// points whatsmeow at the simulator. Each client has its own SQLite store
// (the layout the gateway keeps), or with -shared all of them share one
// database, the sessions merged into it first (the layout of gateways that
// keep every device in one file). It prints a "connected" line once every
// client is connected, then, after -settle, a "memory" line with its RSS,
// Go heap and open files.
func floorMain(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	dir := fs.String("dir", "", "a copy of a gateway storage folder")
	settleFor := fs.Duration("settle", settle, "wait before reading memory")
	shared := fs.Bool("shared", false, "merge the sessions into one shared store first")
	simURL := fs.String("sim", "", "URL of a `whatsapp simulator` to connect to, instead of one in this process on the copy's .wasim folder")
	if err := fs.Parse(args); err != nil {
		return err
	}
	paths, err := filepath.Glob(filepath.Join(*dir, "*", "session.db"))
	if err != nil {
		return err
	}
	var sessions []string
	for _, p := range paths {
		if !strings.HasPrefix(filepath.Base(filepath.Dir(p)), ".") {
			sessions = append(sessions, p)
		}
	}
	if len(sessions) == 0 {
		return errors.New("no sessions under " + *dir)
	}
	ctx := context.Background()
	var devices []*store.Device
	var stores []*sqlstore.Container
	t0 := time.Now()
	if *shared {
		container, err := mergeStores(ctx, filepath.Join(*dir, "shared.db"), sessions)
		if err != nil {
			return err
		}
		stores = append(stores, container)
		if devices, err = container.GetAllDevices(ctx); err != nil {
			return err
		}
		if len(devices) != len(sessions) {
			return fmt.Errorf("the shared store holds %d devices, want %d", len(devices), len(sessions))
		}
	}
	merge := time.Since(t0)

	var httpc *http.Client
	if *simURL != "" {
		remote, err := wasim.NewRemote(*simURL)
		if err != nil {
			return err
		}
		defer remote.Close()
		if whatsmeow.WACertPubKey, err = remote.CertificateRoot(ctx); err != nil {
			return err
		}
		httpc = remote.HTTPClient()
	} else {
		sim, err := wasim.New(wasim.Options{Dir: filepath.Join(*dir, ".wasim")})
		if err != nil {
			return err
		}
		defer sim.Close()
		whatsmeow.WACertPubKey = wasim.RootPublicKey()
		httpc = sim.HTTPClient()
	}

	var (
		connected atomic.Int64
		all       = make(chan struct{})
		once      sync.Once
		failure   = make(chan error, 1)
		mu        sync.Mutex
		clients   []*whatsmeow.Client
		sem       = make(chan struct{}, floorConcurrency)
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		select {
		case failure <- err:
		default:
		}
	}
	for i := range sessions {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var dev *store.Device
			if *shared {
				dev = devices[i]
			} else {
				container, err := sqlstore.New(ctx, "sqlite", floorDSN(sessions[i]), nil)
				if err != nil {
					fail(fmt.Errorf("%s: %w", sessions[i], err))
					return
				}
				mu.Lock()
				stores = append(stores, container)
				mu.Unlock()
				if dev, err = container.GetFirstDevice(ctx); err != nil || dev.ID == nil {
					fail(fmt.Errorf("%s: no session (%v)", sessions[i], err))
					return
				}
			}
			cli := whatsmeow.NewClient(dev, nil)
			cli.SetPreLoginHTTPClient(httpc)
			cli.SetWebsocketHTTPClient(httpc)
			var seen atomic.Bool
			cli.AddEventHandler(func(e any) {
				if _, ok := e.(*events.Connected); ok && seen.CompareAndSwap(false, true) {
					if connected.Add(1) == int64(len(sessions)) {
						once.Do(func() { close(all) })
					}
				}
			})
			mu.Lock()
			clients = append(clients, cli)
			mu.Unlock()
			if err := cli.Connect(); err != nil {
				fail(fmt.Errorf("%s: connect: %w", sessions[i], err))
			}
		}()
	}
	select {
	case <-all:
	case err := <-failure:
		return err
	case <-time.After(5 * time.Minute):
		return fmt.Errorf("only %d of %d clients connected in 5 min", connected.Load(), len(sessions))
	}
	enc := json.NewEncoder(os.Stdout)
	_ = enc.Encode(floorReport{Phase: "connected", Clients: len(sessions), Merge: merge})
	wg.Wait()

	time.Sleep(*settleFor)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := proc.RSS(os.Getpid())
	if err != nil {
		return err
	}
	_ = enc.Encode(floorReport{
		Phase: "memory", Clients: len(sessions), RSS: float64(rss), HeapInuse: float64(ms.HeapInuse),
		GoResident: float64(ms.Sys - ms.HeapReleased), Files: openFiles(os.Getpid()), CPU: cpuTime(os.Getpid()),
		Mapped: fileBacked(os.Getpid()),
	})

	for _, c := range clients {
		c.Disconnect()
	}
	for _, s := range stores {
		_ = s.Close()
	}
	return nil
}

// mergeStores copies the sessions at paths into a new whatsmeow store at
// dst, table by table, and returns it open.
func mergeStores(ctx context.Context, dst string, paths []string) (*sqlstore.Container, error) {
	container, err := sqlstore.New(ctx, "sqlite", floorDSN(dst), nil)
	if err != nil {
		return nil, err
	}
	// ATTACH holds for one connection: use a single one for the copy.
	db, err := sql.Open("sqlite", floorDSN(dst))
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	tables, err := storeTables(ctx, db)
	if err != nil {
		return nil, err
	}
	for _, p := range paths {
		if _, err := db.ExecContext(ctx, `ATTACH DATABASE ? AS src`, "file:"+p); err != nil {
			return nil, fmt.Errorf("attach %s: %w", p, err)
		}
		for _, t := range tables {
			q := fmt.Sprintf(`INSERT OR IGNORE INTO main.%s (%s) SELECT %[2]s FROM src.%[1]s`, t.name, t.columns)
			if _, err := db.ExecContext(ctx, q); err != nil {
				return nil, fmt.Errorf("copy %s of %s: %w", t.name, p, err)
			}
		}
		if _, err := db.ExecContext(ctx, `DETACH DATABASE src`); err != nil {
			return nil, err
		}
	}
	return container, nil
}

type storeTable struct{ name, columns string }

// storeTables lists whatsmeow's tables in dst, the device table first (the
// others refer to it), with their columns.
func storeTables(ctx context.Context, db *sql.DB) ([]storeTable, error) {
	rows, err := db.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'whatsmeow_%'
		AND name <> 'whatsmeow_version' ORDER BY name <> 'whatsmeow_device', name`)
	if err != nil {
		return nil, err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	var out []storeTable
	for _, n := range names {
		rows, err := db.QueryContext(ctx, `SELECT name FROM pragma_table_info(?)`, n)
		if err != nil {
			return nil, err
		}
		var cols []string
		for rows.Next() {
			var c string
			if err := rows.Scan(&c); err != nil {
				rows.Close()
				return nil, err
			}
			cols = append(cols, `"`+c+`"`)
		}
		rows.Close()
		out = append(out, storeTable{name: n, columns: strings.Join(cols, ", ")})
	}
	return out, nil
}

// openFiles counts the file descriptors process pid holds open.
func openFiles(pid int) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	return len(fds)
}

// fileBacked is the part of process pid's RSS that maps files (its
// binary, shared libraries), from /proc/pid/smaps_rollup: RSS less
// anonymous memory. 0 when it cannot be read.
func fileBacked(pid int) float64 {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	var rss, anon float64
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		var kb float64
		if _, err := fmt.Sscan(f[1], &kb); err != nil {
			continue
		}
		switch f[0] {
		case "Rss:":
			rss = kb * 1024
		case "Anonymous:":
			anon = kb * 1024
		}
	}
	return max(0, rss-anon)
}

// floorDSN opens a session store with the pragmas whatsmeow needs
// (foreign keys) and the ones that make SQLite fast (WAL, synchronous
// NORMAL), as any whatsmeow program on modernc SQLite would.
func floorDSN(path string) string {
	return "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)"
}
