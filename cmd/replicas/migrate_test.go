package replicas_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// migratedDevices is how many linked sessions the migrate test moves:
// issue 12's 50 (about 15 s, beside the package's longer tests);
// GOWA_MIGRATE_DEVICES overrides.
func migratedDevices(t *testing.T) int {
	if v := os.Getenv("GOWA_MIGRATE_DEVICES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("GOWA_MIGRATE_DEVICES=%q: want a positive number", v)
		}
		return n
	}
	return 50
}

// TestMigrateThenReplicas: one gateway on SQLite links the devices and
// stops; `whatsapp migrate` moves its folder into PostgreSQL (a second run
// copies nothing); three replicas on the database then connect every
// device exactly once with the sessions it linked, none paired again, and
// at the simulator no device ever had two connections.
func TestMigrateThenReplicas(t *testing.T) {
	c := newCluster(t) // parallel to the other tests
	n := migratedDevices(t)

	// One gateway on its own folder, attached to the shared simulator.
	folder := filepath.Join(c.tmp, "single-storage")
	port := freePort(t)
	single := c.start("single", proc.Options{
		Storages: folder,
		Auth:     creds,
		Args:     []string{"--port", strconv.Itoa(port), "--simulator", c.sim.URL, "--shutdown-grace", "30s"},
	})
	c.mu.Lock()
	c.reps = []*replica{{name: "single", url: single.URL, g: single}}
	c.mu.Unlock()
	jids := c.linkAll(n)
	if code, err := single.Stop(60 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop the single gateway: exit %d, %v", code, err)
	}
	c.mu.Lock()
	c.reps = nil
	c.mu.Unlock()

	migrate := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, c.bin, "migrate", "--from", folder, "--to", c.uri).CombinedOutput()
		if err != nil {
			t.Fatalf("migrate: %v\n%s", err, out)
		}
		return string(out)
	}
	began := time.Now()
	out := migrate()
	t.Logf("migrate of %d linked sessions took %v", n, time.Since(began))
	want := "sessions: " + strconv.Itoa(n) + " copied, 0 skipped; devices: " + strconv.Itoa(n) + " copied, 0 skipped"
	if !strings.Contains(out, want) {
		t.Fatalf("migrate reported:\n%s\nwant %q", out, want)
	}
	if out := migrate(); !strings.Contains(out, "sessions: 0 copied, "+strconv.Itoa(n)+" skipped") {
		t.Fatalf("a second migrate reported:\n%s", out)
	}

	began = time.Now()
	for i := range replicaCount {
		c.addReplica("replica-" + strconv.Itoa(i))
	}
	c.waitConnectedOnce(c.live()[0], jids, 120*time.Second, "after migrate")
	t.Logf("%d migrated devices connected on %d replicas %v after the first one started", n, replicaCount, time.Since(began))
	// The JIDs connected are the ones linked before: none was paired again.
	for _, r := range c.live() {
		list, err := r.g.Devices()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range list {
			if want, ok := jids[d.DeviceID]; ok && (d.Jid == nil || *d.Jid != want) {
				t.Errorf("%s lists %s with JID %v, want %s (linked before the migration)", r.name, d.DeviceID, d.Jid, want)
			}
		}
	}
	c.neverTwice(jids)
}
