package chaos

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

const netPhone = "628400000001"

// TestChaosNetwork makes the simulator drop every connection and refuse
// reconnects for a while, again and again: every device must come back to
// `connected` on its own, and the reconnect attempts must stay few (the
// clients back off instead of storming the server).
func TestChaosNetwork(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	g := start(t, filepath.Join(t.TempDir(), "storages"))
	if err := g.CreatePhone(netPhone, "Flaky"); err != nil {
		t.Fatal(err)
	}
	devices := size(3, 10)
	want := map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range devices {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("net-%d", i)
			jid, err := g.LinkQR(id, netPhone)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			want[id] = jid
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	for cycle := range size(2, 10) {
		refuse := 2 * time.Second
		if full() {
			refuse = time.Duration(1+rng.IntN(5)) * time.Second
		}
		before, err := g.Connections()
		if err != nil {
			t.Fatal(err)
		}
		if before.Attempts == nil {
			t.Fatal("GET /sandbox/connections does not report attempts")
		}
		faultAt := time.Now()
		dropped, err := g.NetworkFault(true, refuse)
		if err != nil {
			t.Fatalf("POST /sandbox/network: %v", err)
		}
		if dropped < devices {
			t.Errorf("cycle %d: dropped %d connections, %d devices are online", cycle, dropped, devices)
		}
		// The refusal lasts until faultAt+refuse; only then can anyone be
		// back. Meanwhile every device must notice that it is offline.
		offline := map[string]bool{}
		for time.Now().Before(faultAt.Add(refuse)) {
			ds, err := g.Devices()
			if err == nil {
				for _, d := range ds {
					if d.State != "connected" {
						offline[d.DeviceID] = true
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if len(offline) < devices {
			t.Errorf("cycle %d: only %d of %d devices ever left `connected` during the outage", cycle, len(offline), devices)
		}
		waitRestored(t, g, want, refuse*4+30*time.Second)
		back := time.Since(faultAt)
		after, err := g.Connections()
		if err != nil {
			t.Fatal(err)
		}
		attempts := *after.Attempts - *before.Attempts
		// whatsmeow waits 0, 2, 4, … s between attempts: a few per device
		// for a refusal of a few seconds. A storm would be hundreds.
		limit := devices * (3 + int(refuse/time.Second))
		t.Logf("cycle %d: refused %s, %d devices back after %s, %d attempts (%.2f per device per refused second)",
			cycle, refuse, devices, back.Round(time.Millisecond), attempts, float64(attempts)/float64(devices)/refuse.Seconds())
		if attempts < devices {
			t.Errorf("cycle %d: %d devices reconnected with %d connection attempts counted: the simulator does not count attempts", cycle, devices, attempts)
		}
		if attempts > limit {
			t.Errorf("cycle %d: %d connection attempts by %d devices for a %s outage: a reconnect storm (limit %d)", cycle, attempts, devices, refuse, limit)
		}
		for jid, n := range after.ByDevice {
			if n > 1 {
				t.Errorf("cycle %d: %d connections for %s", cycle, n, jid)
			}
		}
	}
}
