package middleware_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

// stack is the middleware in the order the gateway uses, around a few
// routes shaped like the API's.
type stack struct {
	url     string
	logs    *syncBuffer
	metrics *middleware.Metrics
}

func newStack(t *testing.T, creds, proxies string) *stack {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	tp, err := middleware.ParseTrustedProxies(proxies)
	if err != nil {
		t.Fatal(err)
	}
	auth, err := middleware.NewAuth(mustCreds(t, creds), "", log)
	if err != nil {
		t.Fatal(err)
	}
	metrics := middleware.NewMetrics(func() map[string]int { return map[string]int{"connected": 2, "pairing": 1} })
	throttle := middleware.NewThrottle(3, time.Minute, nil)

	r := chi.NewRouter()
	r.Use(middleware.RequestID())
	r.Use(middleware.ClientIP(tp))
	r.Use(middleware.AccessLog(logs))
	r.Use(metrics.Middleware)
	r.Use(middleware.Recoverer(log))
	r.Use(middleware.MaxBody(0))
	r.Use(throttle.Middleware)
	r.Use(auth.Middleware("gowa", func(r *http.Request) { throttle.Fail(middleware.ClientIPFrom(r.Context())) }))
	r.NotFound(func(w http.ResponseWriter, r *http.Request) { envelope.Error(w, 404, "no such endpoint") })
	r.Get("/devices/{device_id}", func(w http.ResponseWriter, r *http.Request) {
		envelope.Error(w, 404, "no such device")
	})
	r.Post("/send/message", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		envelope.Write(w, 200, "ok", map[string]string{"message_id": "m1"})
	})
	r.Get("/stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("first\n"))
		if err := http.NewResponseController(w).Flush(); err != nil {
			panic(err)
		}
		_, _ = w.Write([]byte("second\n"))
	})
	r.Get("/panic", func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	r.Get("/metrics", metrics.Handler().ServeHTTP)

	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return &stack{url: srv.URL, logs: logs, metrics: metrics}
}

func (s *stack) do(t *testing.T, method, path, body string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", "secret123")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(raw)
}

// logLine returns the access log line for path.
func (s *stack) logLine(t *testing.T, path string) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, 5*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(s.logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "http request" && m["path"] == path {
				found = m
				return true
			}
		}
		return false
	}, "access log line for "+path)
	return found
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	s := newStack(t, "admin:secret123", "127.0.0.0/8")
	resp, _ := s.do(t, "GET", "/devices/acc-dev?token=hidden", "", "X-Forwarded-For", "192.0.2.1, 10.9.9.9", "X-Request-Id", "req-42")
	if resp.StatusCode != 404 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	line := s.logLine(t, "/devices/acc-dev")
	want := map[string]any{
		"level": "INFO", "method": "GET", "route": "/devices/{device_id}", "status": 404.0,
		"client_ip": "10.9.9.9", "device_id": "acc-dev", "request_id": "req-42",
	}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("%s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms %v", line["duration_ms"])
	}
	if b, _ := line["bytes"].(float64); b <= 0 {
		t.Errorf("bytes %v", line["bytes"])
	}

	// The device of a send comes from the header; bodies, queries and
	// credentials never reach the log.
	s.do(t, "POST", "/send/message?x=querysecret", `{"message":"bodysecret"}`, "X-Device-Id", "dev-7")
	line = s.logLine(t, "/send/message")
	if line["device_id"] != "dev-7" || line["route"] != "/send/message" {
		t.Errorf("send line %v", line)
	}
	logs := s.logs.String()
	for _, secret := range []string{"hidden", "querysecret", "bodysecret", "secret123", "YWRtaW46c2VjcmV0MTIz"} {
		if strings.Contains(logs, secret) {
			t.Errorf("%q reached the logs", secret)
		}
	}

	// A panic is logged as the 500 the client got.
	resp, body := s.do(t, "GET", "/panic", "")
	if resp.StatusCode != 500 || body != `{"code":500,"message":"internal error","data":null}` {
		t.Fatalf("panic: %d %s", resp.StatusCode, body)
	}
	if line := s.logLine(t, "/panic"); line["status"] != 500.0 {
		t.Errorf("panic logged as %v", line["status"])
	}
	// An unknown route has no route and no device.
	s.do(t, "GET", "/nope", "")
	if line := s.logLine(t, "/nope"); line["route"] != "" || line["device_id"] != nil || line["status"] != 404.0 {
		t.Errorf("unknown route line %v", line)
	}
}

func TestRecorderKeepsFlushing(t *testing.T) {
	t.Parallel()
	s := newStack(t, "admin:secret123", "")
	resp, body := s.do(t, "GET", "/stream", "")
	if resp.StatusCode != 200 || body != "first\nsecond\n" {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	if line := s.logLine(t, "/stream"); line["bytes"] != 13.0 || line["status"] != 200.0 {
		t.Errorf("stream line %v", line)
	}
}

func TestStackThrottlesAndAnswers401(t *testing.T) {
	t.Parallel()
	s := newStack(t, "admin:secret123", "127.0.0.1")
	bad := func(ip string) *http.Response {
		req, _ := http.NewRequest("GET", s.url+"/devices/x", nil)
		req.SetBasicAuth("admin", "wrong")
		req.Header.Set("X-Forwarded-For", ip)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 401 && string(raw) != unauthorizedBody {
			t.Fatalf("401 body %q", raw)
		}
		return resp
	}
	for range 3 {
		if resp := bad("203.0.113.7"); resp.StatusCode != 401 {
			t.Fatalf("%d", resp.StatusCode)
		}
	}
	resp, _ := s.do(t, "GET", "/devices/x", "", "X-Forwarded-For", "203.0.113.7")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("throttled client with good credentials: %d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp, _ := s.do(t, "GET", "/devices/x", "", "X-Forwarded-For", "198.51.100.9"); resp.StatusCode != 404 {
		t.Fatalf("other client: %d", resp.StatusCode)
	}
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	s := newStack(t, "admin:secret123", "")
	for _, p := range []string{"/devices/a", "/devices/b", "/devices/c", "/random/1", "/random/2"} {
		s.do(t, "GET", p, "")
	}
	s.metrics.LoginObserved("qr", "success")
	s.metrics.LoginObserved("code", "expired")
	s.metrics.LoginObserved("code", "expired")

	resp, body := s.do(t, "GET", "/metrics", "")
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`gowa_http_requests_total{method="GET",route="/devices/{device_id}",status="404"} 3`,
		`gowa_http_requests_total{method="GET",route="unmatched",status="404"} 2`,
		`gowa_http_request_duration_seconds_count{method="GET",route="/devices/{device_id}"} 3`,
		`gowa_devices{state="connected"} 2`,
		`gowa_devices{state="pairing"} 1`,
		`gowa_devices{state="logged_out"} 0`,
		`gowa_logins_total{method="qr",outcome="success"} 1`,
		`gowa_logins_total{method="code",outcome="expired"} 2`,
		`go_goroutines`,
		`process_`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, raw := range []string{"/devices/a", "/random/1"} {
		if strings.Contains(body, `route="`+raw+`"`) {
			t.Errorf("raw path %s became a label", raw)
		}
	}
}

func TestMetricsWithoutDevices(t *testing.T) {
	t.Parallel()
	for _, fn := range []func() map[string]int{nil, func() map[string]int { return map[string]int{} }} {
		m := middleware.NewMetrics(fn)
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if !strings.Contains(rec.Body.String(), `gowa_devices{state="connected"} 0`) {
			t.Errorf("no zero gauge without devices:\n%s", rec.Body)
		}
	}
}

func TestRefusedRequestsKeepTheirRoute(t *testing.T) {
	t.Parallel()
	s := newStack(t, "admin:secret123", "")
	req, _ := http.NewRequest("GET", s.url+"/devices/refused-dev", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("%d", resp.StatusCode)
	}
	line := s.logLine(t, "/devices/refused-dev")
	if line["route"] != "/devices/{device_id}" || line["device_id"] != "refused-dev" || line["status"] != 401.0 {
		t.Errorf("401 line %v", line)
	}
	_, body := s.do(t, "GET", "/metrics", "")
	if want := `gowa_http_requests_total{method="GET",route="/devices/{device_id}",status="401"} 1`; !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}
