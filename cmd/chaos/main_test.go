package chaos

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// bin is the gateway binary TestMain builds, without -race, once for the
// package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gowa-chaos-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bin, err = proc.Build(ctx, dir)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// full reports whether CHAOS=full asks for the full sizes.
func full() bool { return os.Getenv("CHAOS") == "full" }

// size picks the short or the full figure.
func size(short, long int) int {
	if full() {
		return long
	}
	return short
}

// newRand returns the test's random source, seeded from CHAOS_SEED or the
// clock, and logs the seed so a failure can be replayed.
func newRand(t *testing.T) *rand.Rand {
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("CHAOS_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("CHAOS_SEED=%d", seed)
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// Credentials every test gateway runs with.
const (
	user = "chaos"
	pass = "s3cret:with:colons"
)

var starts atomic.Int64

// start runs the gateway on storages and waits for /health. The process is
// killed when the test ends; its logs are printed if the test failed.
func start(t *testing.T, storages string) *proc.Gateway {
	t.Helper()
	return startWith(t, proc.Options{Storages: storages})
}

// startWith is start with more options; the binary, credentials and log
// file are filled in.
func startWith(t *testing.T, o proc.Options) *proc.Gateway {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("gateway-%d.log", starts.Add(1)))
	o.Bin, o.Auth, o.LogPath = bin, user+":"+pass, logPath
	g, err := proc.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		g.Kill()
		if t.Failed() {
			dumpLog(t, logPath)
		}
	})
	if _, err := g.WaitHealthy(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	return g
}

// dumpLog prints the last lines of a gateway log.
func dumpLog(t *testing.T, path string) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return
	}
	lines := bytes.Split(bytes.TrimSpace(raw), []byte("\n"))
	if len(lines) > 40 {
		lines = lines[len(lines)-40:]
	}
	t.Logf("last lines of %s:\n%s", filepath.Base(path), bytes.Join(lines, []byte("\n")))
}

// eventually polls cond until it returns nil or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, within, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// waitRestored waits until every device in want (id → jid) is connected
// as that jid.
func waitRestored(t *testing.T, g *proc.Gateway, want map[string]string, within time.Duration) {
	t.Helper()
	eventually(t, within, fmt.Sprintf("%d devices restored", len(want)), func() error {
		ds, err := g.Devices()
		if err != nil {
			return err
		}
		byID := map[string]api.Device{}
		for _, d := range ds {
			byID[d.DeviceID] = d
		}
		var missing []string
		for id, jid := range want {
			d, ok := byID[id]
			switch {
			case !ok:
				missing = append(missing, id+" (no slot)")
			case d.Jid == nil || *d.Jid != jid:
				missing = append(missing, fmt.Sprintf("%s (jid %v, want %s, state %s)", id, str(d.Jid), jid, d.State))
			case d.State != api.Connected:
				missing = append(missing, fmt.Sprintf("%s (%s, %s)", id, d.State, str(d.LastError)))
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("not restored: %s", strings.Join(missing, ", "))
		}
		return nil
	})
}

func str(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
