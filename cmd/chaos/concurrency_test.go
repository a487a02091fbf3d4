package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

const racePhone = "628600000001"

// TestChaosConcurrency fires 50 concurrent logins (some of them scanned),
// logouts and reconnects at the same few devices, while sampling the
// simulator's connections: never more than one per device, no 5xx, and
// once things settle each device's state agrees with whether its session
// exists on disk and on the phone.
func TestChaosConcurrency(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	dir := filepath.Join(t.TempDir(), "storages")
	g := start(t, dir)
	if err := g.CreatePhone(racePhone, "Racer"); err != nil {
		t.Fatal(err)
	}
	ids := []string{"race-0", "race-1", "race-2"}
	for _, id := range ids[:2] {
		if _, err := g.LinkQR(id, racePhone); err != nil {
			t.Fatal(err)
		}
	}

	stopSampling := make(chan struct{})
	var samples, worst atomic.Int64
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stopSampling:
				return
			default:
			}
			if c, err := g.Connections(); err == nil {
				samples.Add(1)
				for jid, n := range c.ByDevice {
					if n > 1 {
						t.Errorf("%d connections at once for %s", n, jid)
					}
					if int64(n) > worst.Load() {
						worst.Store(int64(n))
					}
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()

	var byStatus sync.Map
	for round := range size(1, 5) {
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for range 50 {
			id := ids[rng.IntN(len(ids))]
			op := rng.IntN(3)
			scan := rng.IntN(2) == 0
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				code, err := raceOp(g, id, op, scan)
				if err != nil {
					t.Errorf("round %d, op %d on %s: %v", round, op, id, err)
					return
				}
				n, _ := byStatus.LoadOrStore(code, new(atomic.Int64))
				n.(*atomic.Int64).Add(1)
			}()
		}
		close(gate)
		wg.Wait()
	}
	settle(t, g, ids)
	close(stopSampling)
	sampler.Wait()
	counts := map[int]int64{}
	byStatus.Range(func(k, v any) bool { counts[k.(int)] = v.(*atomic.Int64).Load(); return true })
	t.Logf("answers by status %v; %d connection samples, at most %d per device", counts, samples.Load(), worst.Load())
	checkConsistent(t, g, ids)
}

// raceOp runs one login (scanned by the phone when scan), logout or
// reconnect and returns the HTTP status; a 5xx is an error.
func raceOp(g *proc.Gateway, id string, op int, scan bool) (int, error) {
	var (
		code int
		env  proc.Envelope
		err  error
	)
	switch op {
	case 0:
		var qr api.LoginQR
		code, env, err = g.Do("GET", "/devices/"+id+"/login", nil)
		if err == nil && code == 200 && scan {
			if json.Unmarshal(env.Data, &qr) == nil {
				_, _ = g.Scan(racePhone, qr.QrString) // may lose a race; that is fine
			}
		}
	case 1:
		code, env, err = g.Do("POST", "/devices/"+id+"/logout", nil)
	default:
		code, env, err = g.Do("POST", "/devices/"+id+"/reconnect", nil)
	}
	if err != nil {
		return 0, err
	}
	if code >= 500 {
		return code, fmt.Errorf("%d %s", code, env.Message)
	}
	return code, nil
}

// settle waits until no device is connecting any more and the states have
// stayed the same for a while: a scan that won its race links its device a
// moment after the phone answered, so a device can still move from pairing
// to connecting after the last request returned.
func settle(t *testing.T, g *proc.Gateway, ids []string) {
	t.Helper()
	var last string
	stable := 0
	eventually(t, 60*time.Second, "devices settled", func() error {
		var now strings.Builder
		for _, id := range ids {
			d, err := g.Status(id)
			if err != nil {
				return err
			}
			if d.State == api.Connecting {
				stable = 0
				return fmt.Errorf("%s still connecting", id)
			}
			fmt.Fprintf(&now, "%s=%s/%v;", id, d.State, d.LoggedIn)
		}
		if now.String() != last {
			last, stable = now.String(), 0
			return errors.New("states still changing")
		}
		if stable++; stable < 10 {
			return errors.New("states not stable long enough")
		}
		return nil
	})
}

// checkConsistent checks each device's state against its session files,
// the phone's linked devices and the simulator's connections.
func checkConsistent(t *testing.T, g *proc.Gateway, ids []string) {
	t.Helper()
	var linked []api.SandboxDevice
	if err := g.Call("GET", "/sandbox/phones/"+racePhone+"/devices", nil, &linked); err != nil {
		t.Fatal(err)
	}
	onPhone := map[string]bool{}
	for _, d := range linked {
		onPhone[d.Jid] = true
	}
	conns, err := g.Connections()
	if err != nil {
		t.Fatal(err)
	}
	loggedIn := 0
	var pairing []string
	for _, id := range ids {
		d, err := g.Status(id)
		if err != nil {
			t.Fatal(err)
		}
		if d.State == api.Pairing {
			pairing = append(pairing, id)
		}
		switch {
		case d.LoggedIn:
			loggedIn++
			if d.Jid == nil {
				t.Errorf("%s: logged in without a JID", id)
				continue
			}
			if _, err := os.Stat(filepath.Join(g.Storage, *d.Jid, "session.db")); err != nil {
				t.Errorf("%s: logged in as %s but its session is missing: %v", id, *d.Jid, err)
			}
			if !onPhone[*d.Jid] {
				t.Errorf("%s: logged in as %s but the phone does not list it", id, *d.Jid)
			}
			if (d.State == api.Connected) != (conns.ByDevice[*d.Jid] == 1) {
				t.Errorf("%s: state %s with %d connections", id, d.State, conns.ByDevice[*d.Jid])
			}
			if d.State == api.Pairing || d.State == api.LoggedOut {
				t.Errorf("%s: state %s while logged in", id, d.State)
			}
		default:
			if d.State == api.Connected || d.State == api.Connecting {
				t.Errorf("%s: state %s without a session", id, d.State)
			}
		}
	}
	sessions := checkLayout(t, g.Storage, pairing...)
	if len(sessions) != loggedIn {
		t.Errorf("%d session folders on disk, %d devices logged in: %v", len(sessions), loggedIn, sessions)
	}
	for jid := range onPhone {
		if !slices.Contains(sessions, jid) {
			t.Logf("the phone lists %s, which no device holds (a scan that lost a race with a logout)", jid)
		}
	}
}
