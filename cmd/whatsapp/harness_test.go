package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(cleanupAfter{m},
		// whatsmeow's frame reader sends a frame that arrived while the
		// socket was closing on an unbuffered channel nobody reads any more,
		// and blocks there for good (socket/framesocket.go, frameComplete).
		// It is whatsmeow's leak, rare and small; nothing outside the
		// library can unblock it.
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
		// net/http keeps idle keep-alive connections of the test clients.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}

// cleanupAfter removes what tests shared across the package once they
// have all run, and the PostgreSQL cluster of the migrate tests.
type cleanupAfter struct{ m *testing.M }

func (c cleanupAfter) Run() int {
	code := pgtest.Main(c.m)
	if linked.dir != "" {
		_ = os.RemoveAll(linked.dir)
	}
	return code
}

// testGateway is a real gateway in sandbox mode on a loopback port, with
// its storage in a test folder.
type testGateway struct {
	t      *testing.T
	g      *gateway.Gateway
	url    string
	dir    string
	cancel context.CancelFunc
	done   chan error
	client *api.ClientWithResponses
	user   string
	pass   string
	logs   *syncWriter
}

type gatewayOption func(*Config)

func withAuth(pairs string) gatewayOption {
	return func(c *Config) { c.BasicAuth = pairs }
}

// startGateway runs a sandbox gateway on dir until the test ends.
func startGateway(t *testing.T, dir string, opts ...gatewayOption) *testGateway {
	t.Helper()
	return startTuned(t, dir, gateway.Tuning{}, opts...)
}

// startTuned is startGateway with lifetimes shortened.
func startTuned(t *testing.T, dir string, tuning gateway.Tuning, opts ...gatewayOption) *testGateway {
	t.Helper()
	cfg := Config{Host: "127.0.0.1", Port: 0, Storages: dir, OS: "gowa-test", ShutdownGrace: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &syncWriter{}
	// every answer is held to openapi.yaml
	tuning.Wrap = func(h http.Handler) http.Handler { return checkContract(t, h) }
	g, err := openTuned(ctx, cfg, true, logs, tuning)
	if err != nil {
		cancel()
		t.Fatalf("open gateway: %v", err)
	}
	tg := &testGateway{t: t, g: g, url: "http://" + g.Addr(), dir: dir, cancel: cancel, done: make(chan error, 1), logs: logs}
	if cfg.BasicAuth != "" {
		tg.user, tg.pass, _ = strings.Cut(strings.Split(cfg.BasicAuth, ",")[0], ":")
	}
	go func() { tg.done <- g.Run(ctx) }()
	tg.client, err = api.NewClientWithResponses(tg.url, api.WithRequestEditorFn(func(_ context.Context, r *http.Request) error {
		if tg.user != "" {
			r.SetBasicAuth(tg.user, tg.pass)
		}
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tg.stop()
		if t.Failed() {
			// The gateway's own account of what happened, without the
			// access log.
			var lines []string
			for _, l := range strings.Split(logs.String(), "\n") {
				if !strings.Contains(l, `"msg":"http request"`) {
					lines = append(lines, l)
				}
			}
			t.Logf("gateway log (%s), access log left out:\n%s", dir, strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	tg.waitReady()
	return tg
}

func (tg *testGateway) waitReady() {
	tg.t.Helper()
	eventually(tg.t, 10*time.Second, func() bool {
		resp, err := http.Get(tg.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	}, "gateway ready")
}

// stop shuts the gateway down gracefully and waits for it.
func (tg *testGateway) stop() {
	if tg.cancel == nil {
		return
	}
	tg.cancel()
	tg.cancel = nil
	select {
	case err := <-tg.done:
		if err != nil {
			tg.t.Errorf("gateway run: %v", err)
		}
	case <-time.After(30 * time.Second):
		tg.t.Error("gateway did not stop within 30s")
	}
	http.DefaultClient.CloseIdleConnections()
}

// do sends a raw request with the gateway's credentials and decodes the
// envelope. hdr holds header names and values in turn; "Host" sets the
// request's Host.
func (tg *testGateway) do(method, path, body string, hdr ...string) (int, envelopeBody) {
	tg.t.Helper()
	req, err := http.NewRequest(method, tg.url+path, strings.NewReader(body))
	if err != nil {
		tg.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if tg.user != "" && req.Header.Get("Authorization") == "" {
		req.SetBasicAuth(tg.user, tg.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tg.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var env envelopeBody
	if err := json.Unmarshal(raw, &env); err != nil {
		tg.t.Fatalf("%s %s: answer is not the JSON envelope: %q", method, path, raw)
	}
	env.raw = raw
	if env.Code != resp.StatusCode {
		tg.t.Errorf("%s %s: envelope code %d, HTTP status %d", method, path, env.Code, resp.StatusCode)
	}
	return resp.StatusCode, env
}

type envelopeBody struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
	raw     []byte
}

// status returns a device's status through the generated client.
func (tg *testGateway) status(id string) api.Device {
	tg.t.Helper()
	resp, err := tg.client.GetDeviceStatusWithResponse(context.Background(), id)
	if err != nil {
		tg.t.Fatal(err)
	}
	if resp.JSON200 == nil {
		tg.t.Fatalf("status of %s: %d %s", id, resp.StatusCode(), resp.Body)
	}
	return resp.JSON200.Data
}

// waitState waits until device id is in state.
func (tg *testGateway) waitState(id string, state api.DeviceState) api.Device {
	tg.t.Helper()
	var last api.Device
	// Generous: a first connection generates 812 prekeys, which takes
	// seconds under -race on a loaded machine; a passing test never waits
	// this long.
	eventually(tg.t, 60*time.Second, func() bool {
		last = tg.status(id)
		return last.State == state
	}, "device "+id+" "+string(state))
	return last
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// syncWriter collects log output safely from many goroutines.
type syncWriter struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if os.Getenv("GOWA_TEST_LOGS") != "" {
		os.Stderr.Write(p)
	}
	return w.buf.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
