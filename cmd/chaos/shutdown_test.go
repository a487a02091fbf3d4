package chaos

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const shutPhone = "628700000001"

// outcome is one request of the load. start is when its connection was
// made (or, when none was, when the dial began), not when the client's
// goroutine began: a goroutine that starts before the last ready probe may
// dial after it, and only the order of connections says which the server
// accepted first.
type outcome struct {
	start time.Time
	code  int
	err   error
}

// TestChaosShutdownUnderLoad sends SIGTERM while clients send 200 requests
// per second: every request that started before readiness went 503 gets
// its answer (later ones are answered or refused), the process exits 0,
// and the next start restores every device.
func TestChaosShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "storages")
	g := start(t, dir)
	if err := g.CreatePhone(shutPhone, "Shut"); err != nil {
		t.Fatal(err)
	}
	if err := g.CreatePhone(killContact, "Contact"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, id := range []string{"shut-0", "shut-1"} {
		jid, err := g.LinkQR(id, shutPhone)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = jid
	}

	// One connection per request, so that a request is either accepted
	// (and must be answered) or refused at connect time.
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	request := func(i int) *http.Request {
		var r *http.Request
		if i%10 == 0 {
			r, _ = http.NewRequest("POST", g.URL+"/send/message", strings.NewReader(fmt.Sprintf(`{"phone":%q,"message":"load %d"}`, killContact, i)))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("X-Device-Id", "shut-0")
		} else {
			r, _ = http.NewRequest("GET", g.URL+fmt.Sprintf("/devices/shut-%d/status", i%2), nil)
		}
		r.SetBasicAuth(user, pass)
		return r
	}

	var (
		mu        sync.Mutex
		outcomes  []outcome
		lastReady time.Time // start of the last /readyz probe answered 200
		wg        sync.WaitGroup
		stop      = make(chan struct{})
	)
	wg.Add(1)
	go func() { // readiness probe
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			// The probe's connection is made after t0: a load request
			// connected before t0 was accepted before the probe was.
			t0 := time.Now()
			resp, err := client.Get(g.URL + "/readyz")
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					mu.Lock()
					lastReady = t0
					mu.Unlock()
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	wg.Add(1)
	go func() { // 200 requests per second
		defer wg.Done()
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := outcome{start: time.Now()}
				var dialed, connected time.Time
				req := request(i)
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					ConnectStart: func(string, string) { dialed = time.Now() },
					ConnectDone: func(_, _ string, err error) {
						if err == nil {
							connected = time.Now()
						}
					},
				}))
				resp, err := client.Do(req)
				switch {
				case !connected.IsZero():
					o.start = connected
				case !dialed.IsZero():
					o.start = dialed
				}
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					o.code = resp.StatusCode
				}
				o.err = err
				mu.Lock()
				outcomes = append(outcomes, o)
				mu.Unlock()
			}()
		}
	}()

	// About a second of load: wait for the answers themselves, not the
	// clock, so that a slow machine still has load to shut down under.
	eventually(t, 30*time.Second, "200 answers before SIGTERM", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(outcomes) < 200 {
			return fmt.Errorf("%d answers so far", len(outcomes))
		}
		return nil
	})
	if err := g.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("no exit within 30 s of SIGTERM")
	}
	time.Sleep(200 * time.Millisecond) // load against the closed port
	close(stop)
	wg.Wait()
	if _, code := g.Exited(); code != 0 {
		t.Errorf("exit code %d after SIGTERM", code)
	}

	var before, answered, refused, lost int
	for _, o := range outcomes {
		if o.start.Before(lastReady) {
			before++
			if o.err != nil || o.code != 200 {
				t.Errorf("a request started %s before readiness went 503 failed: %d %v", lastReady.Sub(o.start), o.code, o.err)
			}
			continue
		}
		switch {
		case o.err == nil:
			answered++
		case errors.Is(o.err, syscall.ECONNREFUSED):
			refused++
		default:
			lost++ // accepted by the kernel, then closed with the listener
		}
	}
	t.Logf("%d requests: %d before readiness went 503 (all answered), then %d answered, %d refused, %d cut at the closing listener",
		len(outcomes), before, answered, refused, lost)
	if before < 150 {
		t.Errorf("only %d requests before shutdown: the load did not reach 200/s", before)
	}

	g = start(t, dir)
	waitRestored(t, g, want, 60*time.Second)
	checkLayout(t, dir)
}
