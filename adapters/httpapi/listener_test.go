package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// listen serves h as the gateway does, on NewListener with cfg, and
// reports each connection the server closes on closed.
func listen(t *testing.T, h http.Handler, limits httpapi.Limits, cfg httpapi.ListenerConfig) (addr string, closed <-chan struct{}) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(h, limits, nil)
	ch := make(chan struct{}, 100)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			ch <- struct{}{}
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(httpapi.NewListener(ln, cfg))
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return ln.Addr().String(), ch
}

// net/http's own refusal (431) has a request id, in its answer and in an
// access log line, and is counted.
func TestNetHTTPRefusalsAreLoggedAndCounted(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	metrics := middleware.NewMetrics(nil)
	h := httpapi.NewHandler(httpapi.Config{Devices: oneDevice{}, AccessLog: logs, Metrics: metrics})
	addr, _ := listen(t, h, httpapi.Limits{MaxHeaderBytes: 1024}, httpapi.ListenerConfig{AccessLog: logs, Metrics: metrics})
	req, _ := http.NewRequest("GET", "http://"+addr+"/health", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 8<<10))
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 431 || string(body) != `{"code":431,"message":"request headers too large","data":null}` {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	id := resp.Header.Get("X-Request-Id")
	if id == "" {
		t.Fatal("no X-Request-Id on the 431")
	}
	lines := logs.lines(t)
	if len(lines) != 1 {
		t.Fatalf("access log: %s", logs.String())
	}
	l := lines[0]
	if l["status"] != 431.0 || l["request_id"] != id || l["client_ip"] != "127.0.0.1" || l["msg"] != "http request" ||
		l["bytes"] != float64(len(body)) || l["method"] != "" || l["path"] != "" {
		t.Errorf("access log line %v", l)
	}
	w := httptest.NewRecorder()
	metrics.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(w.Body.String(), `gowa_http_requests_total{method="OTHER",route="unmatched",status="431"} 1`) {
		t.Error("the 431 is not counted")
	}
	var env map[string]any
	if err := json.Unmarshal(body, &env); err != nil || env["code"] != 431.0 {
		t.Errorf("envelope %s", body)
	}
}

// A client that asks for answers and never reads them is cut off once a
// write has waited WriteTimeout, instead of holding its connection.
func TestWriteTimeoutCutsOffAClientThatStopsReading(t *testing.T) {
	t.Parallel()
	h := httpapi.NewHandler(httpapi.Config{Devices: oneDevice{}})
	addr, closed := listen(t, h, httpapi.Limits{}, httpapi.ListenerConfig{WriteTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// 62 kB a time, far more than the socket buffers of both ends hold,
	// sent from another goroutine (the server stops reading once its
	// writes block); nothing is ever read here.
	go func() {
		req := "GET /openapi.yaml HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"
		for range 2000 {
			if _, err := io.WriteString(c, req); err != nil {
				return
			}
		}
	}()
	select {
	case <-closed:
	case <-time.After(60 * time.Second):
		t.Fatal("the server still holds the connection of a client that reads nothing")
	}
}

// An event stream runs past the write timeout: the bound is per write.
func TestEventStreamOutlivesTheWriteTimeout(t *testing.T) {
	t.Parallel()
	store, err := sqlite.OpenEvents(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hub := events.New(events.Config{Store: store})
	if err := hub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		hub.CloseStreams()
		_ = hub.Close()
		_ = store.Close()
	})
	h := httpapi.NewHandler(httpapi.Config{Events: hub, Heartbeat: 50 * time.Millisecond})
	addr, _ := listen(t, h, httpapi.Limits{}, httpapi.ListenerConfig{WriteTimeout: 200 * time.Millisecond})
	resp, err := http.Get("http://" + addr + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	for end := time.Now().Add(800 * time.Millisecond); time.Now().Before(end); {
		if _, err := r.ReadString('\n'); err != nil {
			t.Fatalf("the stream ended: %v", err)
		}
	}
	hub.Emit("d", domain.EventDeviceCreated, nil)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no event after the write timeout: %v", err)
		}
		if strings.HasPrefix(line, "event: device.created") {
			break
		}
	}
}
