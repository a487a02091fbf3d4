package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
)

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// lines are the access log lines written so far.
func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// edge is a gateway HTTP stack served the way cmd/whatsapp serves it: the
// handler in NewServer, on a loopback listener wrapped by Listener.
type edge struct {
	url, addr string
	srv       *http.Server
	logs      *syncBuffer
}

func serveEdge(t *testing.T, cfg httpapi.Config, limits httpapi.Limits) *edge {
	t.Helper()
	logs := &syncBuffer{}
	if cfg.Devices == nil {
		cfg.Devices = oneDevice{st: domain.Status{DeviceID: "d1", State: domain.StateDisconnected}}
	}
	cfg.AccessLog = logs
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(httpapi.NewHandler(cfg), limits, nil)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(httpapi.Listener(ln))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return &edge{url: "http://" + ln.Addr().String(), addr: ln.Addr().String(), srv: srv, logs: logs}
}

// stall opens a connection that sends the headers of a request announcing
// a 10-byte body, and never the body.
func (e *edge) stall(t *testing.T, method, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_, err = io.WriteString(c, method+" "+path+" HTTP/1.1\r\nHost: "+e.addr+"\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// closedByServer waits until the server closes c and returns what it sent
// before. The test's own deadline is only a guard against hanging forever.
func closedByServer(t *testing.T, c net.Conn) string {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	b, err := io.ReadAll(c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server kept a stalled connection open")
	}
	return string(b)
}

func TestStalledBodyIsCutAtTheReadTimeout(t *testing.T) {
	t.Parallel()
	creds, _ := middleware.ParseCredentials("admin:secret")
	auth, _ := middleware.NewAuth(creds, "", nil)
	e := serveEdge(t, httpapi.Config{Auth: auth, BodyTimeout: 100 * time.Millisecond}, httpapi.Limits{})

	// Answered without reading the body (401): the answer goes out once
	// the body is given up on, and the connection is closed.
	got := closedByServer(t, e.stall(t, "POST", "/send/message"))
	if !strings.HasPrefix(got, "HTTP/1.1 401 ") || !strings.Contains(got, `{"code":401,"message":"Unauthorized","data":null}`) {
		t.Errorf("answer to a stalled unauthenticated body: %q", got)
	}
	// Read by the handler (the health probe does not, the send does once
	// authenticated): 408 in the envelope, then the connection is closed.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /send/message HTTP/1.1\r\nHost: "+e.addr+"\r\nAuthorization: Basic YWRtaW46c2VjcmV0\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"phone\":")
	got = closedByServer(t, c)
	if !strings.HasPrefix(got, "HTTP/1.1 408 ") || !strings.Contains(got, `"code":408`) {
		t.Errorf("answer to a body that stopped halfway: %q", got)
	}
}

func TestStalledConnectionsDoNotStopHealth(t *testing.T) {
	t.Parallel()
	e := serveEdge(t, httpapi.Config{BodyTimeout: 300 * time.Millisecond}, httpapi.Limits{})
	const n = 300
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = e.stall(t, "POST", "/health")
	}
	// While they hang, the probe answers.
	resp, err := http.Get(e.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/health with %d stalled connections: %d", n, resp.StatusCode)
	}
	// And every one of them is closed by the server.
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			closedByServer(t, c)
		}()
	}
	wg.Wait()
}

// TestAccessLogWaitsForTheAnswer: a request is logged once its answer can
// go out, not when the handler returned while its body still hangs; a
// caller that hangs up instead is a 499, never the status it did not get.
func TestAccessLogWaitsForTheAnswer(t *testing.T) {
	t.Parallel()
	creds, _ := middleware.ParseCredentials("admin:secret")
	auth, _ := middleware.NewAuth(creds, "", nil)
	e := serveEdge(t, httpapi.Config{Auth: auth, BodyTimeout: time.Hour}, httpapi.Limits{})
	c := e.stall(t, "POST", "/send/message")

	// A later request is logged; the stalled one is not yet.
	resp, err := http.Get(e.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), `"path":"/health"`) }, "the /health line")
	if strings.Contains(e.logs.String(), `"path":"/send/message"`) {
		t.Fatalf("a stalled request was logged before its answer could go out:\n%s", e.logs)
	}
	c.Close()
	waitFor(t, func() bool { return strings.Contains(e.logs.String(), `"path":"/send/message"`) }, "the hung-up request's line")
	for _, l := range e.logs.lines(t) {
		if l["path"] == "/send/message" && l["status"] != 499.0 {
			t.Errorf("a caller that hung up logged as %v, want 499", l["status"])
		}
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOversizedHeadersAre431InTheEnvelope: net/http's own refusal, written
// before any handler runs, comes in the envelope too.
func TestOversizedHeadersAre431InTheEnvelope(t *testing.T) {
	t.Parallel()
	e := serveEdge(t, httpapi.Config{}, httpapi.Limits{MaxHeaderBytes: 1024})
	req, _ := http.NewRequest("GET", e.url+"/health", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 8<<10))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 431 || resp.Header.Get("Content-Type") != "application/json" ||
		string(body) != `{"code":431,"message":"request headers too large","data":null}` {
		t.Errorf("%d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	// A malformed request is a 400 in the envelope.
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "GET /health HTTP/1.1\r\n\r\n") // no Host
	r, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(r.Body)
	if r.StatusCode != 400 || !strings.HasPrefix(string(b), `{"code":400,"message":"malformed request: missing required Host header"`) {
		t.Errorf("%d %q", r.StatusCode, b)
	}
}

// TestLogFieldsAreBounded: a 1 MB path and a 1 MB device id or user agent
// reach the log cut, for refused requests too.
func TestLogFieldsAreBounded(t *testing.T) {
	t.Parallel()
	creds, _ := middleware.ParseCredentials("admin:secret")
	auth, _ := middleware.NewAuth(creds, "", nil)
	e := serveEdge(t, httpapi.Config{Auth: auth}, httpapi.Limits{MaxHeaderBytes: 4 << 20})
	huge := strings.Repeat("p", 1<<20)
	for _, c := range []struct {
		method, path string
		auth         bool
		want         int
	}{
		{"GET", "/devices/" + huge + "/status", false, 401},
		{"GET", "/" + huge, true, 404},
		{"DELETE", "/devices/" + huge, false, 401},
	} {
		req, _ := http.NewRequest(c.method, e.url+c.path, nil)
		req.Header.Set("User-Agent", huge)
		req.Header.Set("X-Device-Id", huge)
		if c.auth {
			req.SetBasicAuth("admin", "secret")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || len(body) > 4<<10 {
			t.Errorf("status %d (want %d), %d-byte answer", resp.StatusCode, c.want, len(body))
		}
	}
	waitFor(t, func() bool { return len(e.logs.lines(t)) == 3 }, "three log lines")
	if n := len(e.logs.String()); n > 8<<10 {
		t.Errorf("%d bytes of log for three requests", n)
	}
	for _, l := range e.logs.lines(t) {
		for _, k := range []string{"path", "user_agent", "device_id"} {
			v, _ := l[k].(string)
			if !strings.Contains(v, "…[cut: ") {
				t.Errorf("%s not marked as cut: %.80q", k, v)
			}
			if len(v) > middleware.MaxLogField+64 {
				t.Errorf("%s is %d bytes in the log", k, len(v))
			}
		}
	}
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewJSONHandler(w, nil)) }

// hangUp is a Devices whose login and send wait for the caller to hang up.
type hangUp struct {
	oneDevice
	started chan struct{}
}

func (h hangUp) LoginQR(ctx context.Context, _ string) (device.QR, error) {
	h.started <- struct{}{}
	<-ctx.Done()
	return device.QR{}, fmt.Errorf("login cut short: %w", ctx.Err())
}

func (h hangUp) Send(ctx context.Context, _, _, _ string) (domain.SentMessage, string, error) {
	h.started <- struct{}{}
	<-ctx.Done()
	return domain.SentMessage{}, "", domain.Errorf(domain.EUNAVAILABLE, "send cut short: %v", ctx.Err())
}

// TestCallerHangUpIs499: a caller that hangs up mid-login or mid-send is
// a 499 in the access log and the metrics, and no ERROR line, whatever
// error the service returns for the cut-short work (an internal one for
// the login here).
func TestCallerHangUpIs499(t *testing.T) {
	t.Parallel()
	started := make(chan struct{}, 1)
	logs := &syncBuffer{}
	metrics := middleware.NewMetrics(nil)
	e := serveEdge(t, httpapi.Config{
		Devices: hangUp{started: started},
		Logger:  slogTo(logs),
		Metrics: metrics,
	}, httpapi.Limits{})
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/send/message", `{"phone":"628123456789","message":"hi"}`},
		{"GET", "/devices/d1/login", ""},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, c.method, e.url+c.path, strings.NewReader(c.body))
		if c.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		errc := make(chan error, 1)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			errc <- err
		}()
		<-started
		cancel()
		<-errc
		waitFor(t, func() bool { return strings.Contains(e.logs.String(), `"path":"`+c.path+`"`) }, "the access log line of "+c.path)
	}
	for _, l := range e.logs.lines(t) {
		if l["status"] != 499.0 {
			t.Errorf("%v logged as %v, want 499", l["path"], l["status"])
		}
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("a hang-up logged at ERROR: %s", logs)
	}
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `gowa_http_requests_total{method="POST",route="/send/message",status="499"} 1`) ||
		!strings.Contains(string(m), `gowa_http_requests_total{method="GET",route="/devices/{device_id}/login",status="499"} 1`) {
		t.Errorf("metrics lack the 499:\n%s", m)
	}
}
