package chaos

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// Simulated accounts of the kill test.
const (
	killPhone    = "628300000001"
	killContact  = "628300000002"
	pairsPerKill = 2
)

// TestChaosKill kills the gateway with SIGKILL at random moments while it
// pairs devices, restores sessions or sends, and restarts it each time:
// every device that had reached `connected` before a kill is restored as
// the same JID, every SQLite file passes integrity_check, and once
// restoring is done nothing half-made is left in the storage folder.
func TestChaosKill(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	dir := filepath.Join(t.TempDir(), "storages")
	cycles := size(3, 20)
	known := map[string]string{} // device id → jid, connected before some kill
	phases := []string{"pairing", "sending", "restoring"}
	for cycle := range cycles {
		phase := phases[cycle%len(phases)]
		if cycle >= len(phases) {
			phase = phases[rng.IntN(len(phases))]
		}
		if phase == "sending" && len(known) == 0 {
			phase = "pairing"
		}
		g := start(t, dir)
		if err := g.CreatePhone(killPhone, "Killed"); err != nil {
			t.Fatal(err)
		}
		if err := g.CreatePhone(killContact, "Contact"); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(rng.IntN(1500)) * time.Millisecond
		switch phase {
		case "restoring":
			// Kill while the sessions of the last cycle reconnect.
			delay = time.Duration(rng.IntN(400)) * time.Millisecond
			time.Sleep(delay)
		case "pairing":
			restored(t, g, known)
			confirmed := pairDuring(g, cycle, delay)
			maps.Copy(known, confirmed)
		case "sending":
			restored(t, g, known)
			sendDuring(t, g, known, rng, delay)
		}
		g.Kill()
		t.Logf("cycle %d: killed while %s after %s; %d devices known", cycle, phase, delay, len(known))
		checkIntegrity(t, dir)
	}

	g := start(t, dir)
	restored(t, g, known)
	sessions := checkLayout(t, dir)
	if len(sessions) < len(known) {
		t.Errorf("%d session folders for %d restored devices", len(sessions), len(known))
	}
	if code, err := g.Stop(30 * time.Second); err != nil || code != 0 {
		t.Errorf("stop: code %d, %v", code, err)
	}
	checkIntegrity(t, dir)
}

// restored waits until every known device is back, then checks the layout:
// restoring has finished, so nothing may be half-made.
func restored(t *testing.T, g *proc.Gateway, known map[string]string) {
	t.Helper()
	waitRestored(t, g, known, 60*time.Second)
	checkLayout(t, g.Storage)
}

// pairDuring links pairsPerKill new devices at once and returns, after
// delay, those that had reached `connected` by then (id → jid).
func pairDuring(g *proc.Gateway, cycle int, delay time.Duration) map[string]string {
	var (
		mu        sync.Mutex
		confirmed = map[string]string{}
		deadline  = time.Now().Add(delay)
	)
	for i := range pairsPerKill {
		id := fmt.Sprintf("k%02d-%d", cycle, i)
		go func() {
			jid, err := g.LinkQR(id, killPhone)
			if err == nil && time.Now().Before(deadline) {
				mu.Lock()
				confirmed[id] = jid
				mu.Unlock()
			}
		}()
	}
	time.Sleep(delay)
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(confirmed)
}

// sendDuring sends from the known devices in a loop and returns after
// delay with sends still in flight; the workers end when the kill cuts
// their requests off.
func sendDuring(t *testing.T, g *proc.Gateway, known map[string]string, rng *rand.Rand, delay time.Duration) {
	ids := make([]string, 0, len(known))
	for id := range known {
		ids = append(ids, id)
	}
	var sent sync.WaitGroup
	for w := range 4 {
		id := ids[(w+rng.IntN(len(ids)))%len(ids)]
		sent.Add(1)
		go func() {
			defer sent.Done()
			for i := 0; ; i++ {
				if _, err := g.Send(id, killContact, fmt.Sprintf("chaos %d", i)); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(delay)
	t.Cleanup(sent.Wait)
}
