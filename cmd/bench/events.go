package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
	"github.com/gowa-dev/gowa/domain"
)

// Sizes of the live-event phases.
const (
	streamSubscribers = 1000
	streamRounds      = 20
	cpuEvents         = 2000
	drainEvents       = 20000
	benchHookSecret   = "bench-webhook-secret-0123456789"
)

// events measures live events: how fast 1,000 event-stream subscribers see
// one device's state change (the gateway binary, over HTTP), the gateway's
// CPU per 1,000 events, and how fast the webhook outbox drains to a local
// receiver (in process, on the real SQLite outbox and HTTP sender).
func (b *bench) events() error {
	var delivered atomic.Int64
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		delivered.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = recv.Serve(ln) }()
	defer recv.Close()
	hookURL := "http://" + ln.Addr().String() + "/hook"

	g, err := proc.Start(proc.Options{
		Bin: b.bin, Storages: filepath.Join(b.tmp, "events"), Auth: benchUser + ":" + benchPass,
		LogPath: filepath.Join(b.tmp, "gateway-events.log"),
		Args:    []string{"--webhook", hookURL, "--webhook-secret", benchHookSecret},
	})
	if err != nil {
		return err
	}
	defer g.Kill()
	if _, err := g.WaitHealthy(60 * time.Second); err != nil {
		return err
	}
	if err := b.streamLatency(g, &delivered); err != nil {
		return fmt.Errorf("event stream: %w", err)
	}
	if err := stop(g); err != nil {
		return err
	}
	return b.webhookDrain(hookURL, &delivered)
}

// subscriber is one open event stream, noting when each device's
// device.created arrived.
type subscriber struct {
	mu   sync.Mutex
	seen map[string]time.Time
	n    atomic.Int64
}

func (b *bench) streamLatency(g *proc.Gateway, delivered *atomic.Int64) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: streamSubscribers}}
	subs := make([]*subscriber, streamSubscribers)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range subs {
		s := &subscriber{seen: map[string]time.Time{}}
		subs[i] = s
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.URL+"/events?type=device.created", nil)
		req.SetBasicAuth(benchUser, benchPass)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		if resp.StatusCode != 200 {
			resp.Body.Close()
			return fmt.Errorf("GET /events: %s", resp.Status)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			for sc.Scan() {
				line := sc.Text()
				if data, ok := strings.CutPrefix(line, "data: "); ok {
					at := time.Now()
					// The device id is all that is needed: cheaper than JSON.
					_, rest, _ := strings.Cut(data, `"device_id":"`)
					dev, _, _ := strings.Cut(rest, `"`)
					s.mu.Lock()
					s.seen[dev] = at
					s.mu.Unlock()
					s.n.Add(1)
				}
			}
		}()
	}
	if err := waitFor(10*time.Second, func() bool {
		n, err := g.Metric("gowa_event_stream_subscribers")
		return err == nil && n == streamSubscribers
	}); err != nil {
		return fmt.Errorf("%d subscribers never all connected: %w", streamSubscribers, err)
	}

	var lat []time.Duration
	for i := range streamRounds {
		dev := fmt.Sprintf("stream-%d", i)
		t0 := time.Now()
		if code, env, err := g.Do("POST", "/devices", map[string]string{"device_id": dev}); err != nil || code != 201 {
			return fmt.Errorf("create %s: %d %s %v", dev, code, env.Message, err)
		}
		if err := waitFor(10*time.Second, func() bool {
			for _, s := range subs {
				s.mu.Lock()
				_, ok := s.seen[dev]
				s.mu.Unlock()
				if !ok {
					return false
				}
			}
			return true
		}); err != nil {
			return fmt.Errorf("not every subscriber saw %s", dev)
		}
		for _, s := range subs {
			s.mu.Lock()
			lat = append(lat, s.seen[dev].Sub(t0))
			s.mu.Unlock()
		}
	}
	slices.Sort(lat)
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.add(row{
		figure: fmt.Sprintf("Events: %d stream subscribers see a device.created (API call → event read), p50 / p99", streamSubscribers),
		value:  millis(p50) + " / " + millis(p99), goal: "p99 < 100 ms", met: yesNo(p99 < 100*time.Millisecond),
	})

	// CPU per 1,000 events: the gateway creating devices through the API,
	// writing each event, telling every stream and the webhook.
	cpu0 := cpuTime(g.PID())
	base := delivered.Load()
	t0 := time.Now()
	work := make(chan int)
	var cg sync.WaitGroup
	var failed atomic.Int64
	for range 16 {
		cg.Go(func() {
			for i := range work {
				if code, _, err := g.Do("POST", "/devices", map[string]string{"device_id": fmt.Sprintf("cpu-%d", i)}); err != nil || code != 201 {
					failed.Add(1)
				}
			}
		})
	}
	for i := range cpuEvents {
		work <- i
	}
	close(work)
	cg.Wait()
	if failed.Load() > 0 {
		return fmt.Errorf("%d device creations failed", failed.Load())
	}
	want := int64(streamRounds + cpuEvents)
	if err := waitFor(60*time.Second, func() bool {
		if delivered.Load()-base < cpuEvents {
			return false
		}
		for _, s := range subs {
			if s.n.Load() < want {
				return false
			}
		}
		return true
	}); err != nil {
		return fmt.Errorf("events not all streamed and delivered: %w", err)
	}
	took := time.Since(t0)
	cpu1 := cpuTime(g.PID())
	perK := (cpu1 - cpu0) * 1000 / cpuEvents
	b.add(row{
		figure: fmt.Sprintf("Events: gateway CPU per 1,000 events (API create + log + %d streams + 1 webhook)", streamSubscribers),
		value:  fmt.Sprintf("%s CPU (%d events in %s)", millis(perK), cpuEvents, millis(took)),
	})
	cancel()
	client.CloseIdleConnections()
	return nil
}

// webhookDrain fills the outbox of a webhook with no sender, then starts a
// hub that sends, and times the drain to the local receiver: once for one
// device (each delivery waits for the one before), once for 50 devices.
func (b *bench) webhookDrain(hookURL string, delivered *atomic.Int64) error {
	for _, devices := range []int{1, 50} {
		dir, err := os.MkdirTemp(b.tmp, "outbox-")
		if err != nil {
			return err
		}
		hook := gateway.EventsConfig{Webhooks: []string{hookURL}, WebhookSecret: benchHookSecret}
		fill, err := gateway.OpenEventService(context.Background(), dir, hook, false)
		if err != nil {
			return err
		}
		for i := range drainEvents {
			fill.Emit(fmt.Sprintf("d%d", i%devices), domain.EventMessageReceived, domain.MessageEventData{ID: strconv.Itoa(i), Type: "text", Text: "hello"})
		}
		_ = fill.Close()
		base := delivered.Load()
		t0 := time.Now()
		drain, err := gateway.OpenEventService(context.Background(), dir, hook, true)
		if err != nil {
			return err
		}
		err = waitFor(120*time.Second, func() bool { return delivered.Load()-base >= drainEvents })
		took := time.Since(t0)
		_ = drain.Close()
		if err != nil {
			return fmt.Errorf("the outbox did not drain: %d of %d", delivered.Load()-base, drainEvents)
		}
		rate := float64(drainEvents) / took.Seconds()
		b.add(row{
			figure: fmt.Sprintf("Webhooks: outbox drain to a local receiver, %d events of %d device(s), in order per device", drainEvents, devices),
			value:  fmt.Sprintf("%.0f deliveries/s", rate), goal: "≥ 2,000/s", met: yesNo(rate >= 2000),
		})
	}
	return nil
}

// waitFor polls ok until it holds or within passes.
func waitFor(within time.Duration, ok func() bool) error {
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s", within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return nil
}
