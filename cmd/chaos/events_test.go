package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

const chaosHookSecret = "chaos-webhook-secret-0123456789"

// faultyReceiver is a webhook receiver on a fixed loopback port that can
// be taken down and brought back, and that answers a share of deliveries
// with a fault: a 500, a timeout or a reset connection.
type faultyReceiver struct {
	t    *testing.T
	addr string
	rng  *rand.Rand

	mu     sync.Mutex
	ln     net.Listener
	srv    *http.Server
	faults float64            // share of deliveries that get a fault
	first  map[string][]int64 // device → event ids in order of first arrival
	seen   map[int64]bool     // event ids delivered at least once
	dups   int                // deliveries of an event seen before
	bad    []string           // deliveries that failed verification
}

func newFaultyReceiver(t *testing.T, rng *rand.Rand) *faultyReceiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &faultyReceiver{t: t, addr: ln.Addr().String(), rng: rng, first: map[string][]int64{}, seen: map[int64]bool{}}
	r.serve(ln)
	t.Cleanup(r.down)
	return r
}

func (r *faultyReceiver) url() string { return "http://" + r.addr + "/hook" }

func (r *faultyReceiver) serve(ln net.Listener) {
	srv := &http.Server{Handler: http.HandlerFunc(r.handle)}
	r.mu.Lock()
	r.ln, r.srv = ln, srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

// down closes the listener: deliveries meet a refused connection.
func (r *faultyReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

// up listens again on the same port.
func (r *faultyReceiver) up() {
	var ln net.Listener
	var err error
	for range 100 { // the port may linger a moment
		if ln, err = net.Listen("tcp", r.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		r.t.Fatalf("receiver back up: %v", err)
	}
	r.serve(ln)
}

func (r *faultyReceiver) setFaults(share float64) {
	r.mu.Lock()
	r.faults = share
	r.mu.Unlock()
}

func (r *faultyReceiver) handle(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	fault := -1
	if r.rng.Float64() < r.faults {
		fault = r.rng.IntN(3)
	}
	r.mu.Unlock()
	switch fault {
	case 0:
		w.WriteHeader(http.StatusInternalServerError)
		return
	case 1:
		// Never answer: the gateway's 1 s timeout gives up and hangs up,
		// which ends this request's context.
		<-req.Context().Done()
		return
	case 2:
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				_ = c.Close()
				return
			}
		}
	}
	if err := webhook.Verify(chaosHookSecret, req.Header.Get("X-Gowa-Signature"), body, time.Now(), 5*time.Minute); err != nil {
		r.mu.Lock()
		r.bad = append(r.bad, err.Error())
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	id, _ := strconv.ParseInt(req.Header.Get("X-Gowa-Delivery"), 10, 64)
	var ev struct {
		DeviceID string `json:"device_id"`
	}
	_ = json.Unmarshal(body, &ev)
	r.mu.Lock()
	if r.seen[id] {
		r.dups++
	} else {
		r.seen[id] = true
		r.first[ev.DeviceID] = append(r.first[ev.DeviceID], id)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *faultyReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.seen)
}

// TestChaosWebhooks makes device events while the receiver fails a share
// of deliveries (500s, timeouts, resets), is down for a while, and the
// gateway is killed with SIGKILL in the middle of the backlog: in the end
// every event of the log reached the receiver, verified, first in order per
// device, and the outbox is empty.
func TestChaosWebhooks(t *testing.T) {
	t.Parallel()
	rng := newRand(t)
	rcv := newFaultyReceiver(t, rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64())))
	dir := filepath.Join(t.TempDir(), "storages")
	opts := proc.Options{Storages: dir, Args: []string{
		"--webhook", rcv.url(), "--webhook-secret", chaosHookSecret,
		"--webhook-timeout", "1s", "--webhook-retry-max", "2s",
	}}
	devices, rounds := size(5, 20), size(4, 10)
	downFor := time.Duration(size(3, 60)) * time.Second

	g := startWith(t, opts)
	churn := func(g *proc.Gateway, round int) {
		var wg sync.WaitGroup
		for d := range devices {
			wg.Go(func() {
				id := fmt.Sprintf("hook-%d", d)
				if code, env, err := g.Do("POST", "/devices", map[string]string{"device_id": id}); err != nil || code != 201 {
					t.Errorf("round %d: create %s: %d %s %v", round, id, code, env.Message, err)
				}
				if code, env, err := g.Do("DELETE", "/devices/"+id, nil); err != nil || code != 200 {
					t.Errorf("round %d: delete %s: %d %s %v", round, id, code, env.Message, err)
				}
			})
		}
		wg.Wait()
	}
	// Faults on a share of deliveries.
	rcv.setFaults(0.3)
	for round := range rounds / 2 {
		churn(g, round)
	}
	// The receiver goes down; the backlog grows; the gateway is killed in
	// the middle of it and restarted; the receiver comes back.
	rcv.down()
	for round := rounds / 2; round < rounds; round++ {
		churn(g, round)
	}
	g.Kill()
	g = startWith(t, opts)
	time.Sleep(downFor / 2)
	rcv.up()
	rcv.setFaults(0.1)
	time.Sleep(downFor / 2)
	rcv.setFaults(0)

	want := allEventIDs(t, g)
	if len(want) != 2*devices*rounds {
		t.Fatalf("the log holds %d events, want %d", len(want), 2*devices*rounds)
	}
	eventually(t, 2*time.Minute, "every event delivered", func() error {
		if n := rcv.count(); n < len(want) {
			return fmt.Errorf("%d of %d delivered", n, len(want))
		}
		return nil
	})
	eventually(t, 30*time.Second, "the outbox drained", func() error {
		depth, err := g.Metric(`gowa_webhook_outbox_depth{endpoint="global:` + rcv.url() + `"}`)
		if err != nil {
			return err
		}
		if depth != 0 {
			return fmt.Errorf("outbox depth %v", depth)
		}
		return nil
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	for _, id := range want {
		if !rcv.seen[id] {
			t.Errorf("event %d never delivered", id)
		}
	}
	for dev, ids := range rcv.first {
		if !slices.IsSorted(ids) {
			t.Errorf("device %s: events first arrived as %v, out of order", dev, ids)
		}
	}
	if len(rcv.bad) > 0 {
		t.Errorf("%d deliveries failed verification: %v", len(rcv.bad), rcv.bad[0])
	}
	t.Logf("%d events delivered over faults, an outage of %s and a SIGKILL; %d repeated deliveries", len(want), downFor, rcv.dups)
}

// allEventIDs pages through the gateway's event log.
func allEventIDs(t *testing.T, g *proc.Gateway) []int64 {
	t.Helper()
	var ids []int64
	after := int64(0)
	for {
		code, env, err := g.Do("GET", "/events?limit=1000&after="+strconv.FormatInt(after, 10), nil, "Accept", "application/json")
		if err != nil || code != 200 {
			t.Fatalf("GET /events page: %d %v", code, err)
		}
		var page struct {
			Events []struct {
				ID   int64  `json:"id"`
				Type string `json:"type"`
			} `json:"events"`
			NextAfter int64 `json:"next_after"`
		}
		if err := json.Unmarshal(env.Data, &page); err != nil {
			t.Fatal(err)
		}
		if len(page.Events) == 0 {
			return ids
		}
		for _, ev := range page.Events {
			ids = append(ids, ev.ID)
		}
		after = page.NextAfter
	}
}
