package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	_ "modernc.org/sqlite" // the "sqlite" driver whatsmeow's store opens

	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// floorConcurrency is the device service's default RestoreConcurrency:
// the floor connects as many clients at once as the gateway does.
const floorConcurrency = 16

// floorMain is the hidden subcommand "floor": one simulator opened on the
// copy's .wasim folder and one bare whatsmeow client per session.db under
// -dir, each on its own SQLite store, connected at most floorConcurrency at
// a time, exactly as the gateway points whatsmeow at the simulator. It
// prints a "connected" line once every client is connected, then, after
// -settle, a "memory" line with its RSS and Go heap.
func floorMain(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	dir := fs.String("dir", "", "a copy of a gateway storage folder")
	settleFor := fs.Duration("settle", settle, "wait before reading memory")
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

	sim, err := wasim.New(wasim.Options{Dir: filepath.Join(*dir, ".wasim")})
	if err != nil {
		return err
	}
	defer sim.Close()
	whatsmeow.WACertPubKey = wasim.RootPublicKey()
	httpc := sim.HTTPClient()

	ctx := context.Background()
	var (
		connected atomic.Int64
		all       = make(chan struct{})
		once      sync.Once
		failure   = make(chan error, 1)
		mu        sync.Mutex
		clients   []*whatsmeow.Client
		stores    []*sqlstore.Container
		sem       = make(chan struct{}, floorConcurrency)
		wg        sync.WaitGroup
	)
	fail := func(err error) {
		select {
		case failure <- err:
		default:
		}
	}
	for _, path := range sessions {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			container, err := sqlstore.New(ctx, "sqlite", floorDSN(path), nil)
			if err != nil {
				fail(fmt.Errorf("%s: %w", path, err))
				return
			}
			dev, err := container.GetFirstDevice(ctx)
			if err != nil || dev.ID == nil {
				fail(fmt.Errorf("%s: no session (%v)", path, err))
				return
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
			clients, stores = append(clients, cli), append(stores, container)
			mu.Unlock()
			if err := cli.Connect(); err != nil {
				fail(fmt.Errorf("%s: connect: %w", path, err))
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
	_ = enc.Encode(floorReport{Phase: "connected", Clients: len(sessions)})
	wg.Wait()

	time.Sleep(*settleFor)
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	rss, err := proc.RSS(os.Getpid())
	if err != nil {
		return err
	}
	_ = enc.Encode(floorReport{Phase: "memory", Clients: len(sessions), RSS: float64(rss), HeapInuse: float64(ms.HeapInuse)})

	for _, c := range clients {
		c.Disconnect()
	}
	for _, s := range stores {
		_ = s.Close()
	}
	return nil
}

// floorDSN opens a session store with the pragmas whatsmeow needs
// (foreign keys) and the ones that make SQLite fast (WAL, synchronous
// NORMAL), as any whatsmeow program on modernc SQLite would.
func floorDSN(path string) string {
	return "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)"
}
