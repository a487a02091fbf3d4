package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
)

// statusDevices serves Get as the device service does for one device d1:
// malformed ids are EINVALID, unknown ones ENOTFOUND; "down" is
// EUNAVAILABLE and "panic" panics, for the error and panic paths.
type statusDevices struct{ Devices }

func (statusDevices) Get(_ context.Context, id string) (domain.Status, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return domain.Status{}, err
	}
	switch id {
	case "panic":
		panic("a handler bug")
	case "down":
		return domain.Status{}, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	case "d1":
		at := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
		return domain.Status{
			DeviceID: "d1", State: domain.StateConnected, Since: at, CreatedAt: at, LoggedIn: true, Connected: true,
			Identity: domain.Identity{JID: "628123456789:1@s.whatsapp.net", Phone: "628123456789", PushName: `Al"ice`, Platform: "android"},
			Pairing:  &domain.Pairing{Method: domain.PairingQR, ExpiresAt: at},
		}, nil
	}
	return domain.Status{}, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
}

// statusStack is one gateway handler with its own logs, metrics and
// throttle, so that two of them can be compared.
type statusStack struct {
	h        http.Handler
	access   *lockedBuffer
	errors   *lockedBuffer
	metrics  *middleware.Metrics
	fellBack int // requests statusRoute handed to the generic stack
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// newStatusStack returns the gateway's handler; generic leaves out the
// fast route, as if it did not exist.
func newStatusStack(t *testing.T, generic bool) *statusStack {
	t.Helper()
	creds, err := middleware.ParseCredentials("bench:secret")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := middleware.NewAuth(creds, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &statusStack{access: &lockedBuffer{}, errors: &lockedBuffer{}, metrics: middleware.NewMetrics(nil)}
	h := NewHandler(Config{
		Devices:   statusDevices{},
		Logger:    slog.New(slog.NewJSONHandler(s.errors, nil)),
		AccessLog: s.access,
		Auth:      auth,
		Throttle:  middleware.NewThrottle(3, time.Minute, nil),
		Metrics:   s.metrics,
		Sites:     middleware.NewSiteGuard(nil, true),
	})
	route, ok := h.(*statusRoute)
	if !ok {
		t.Fatalf("NewHandler returned %T, want the status route in front", h)
	}
	if generic {
		s.h = route.next
		return s
	}
	next := route.next
	route.next = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.fellBack++
		next.ServeHTTP(w, r)
	})
	s.h = route
	return s
}

// TestStatusRouteMatchesGeneric: the fast status route answers exactly as
// the generic stack would (status, headers, body), writes the same access
// log and error log lines and counts the same metrics, for answers and
// refusals alike, and answers the status operation's answers itself.
func TestStatusRouteMatchesGeneric(t *testing.T) {
	t.Parallel()
	fast, generic := newStatusStack(t, false), newStatusStack(t, true)
	type req struct {
		name, method, target, host, auth, requestID, userAgent string
		fast                                                   bool // answered by the fast route itself
	}
	good := "bench:secret"
	reqs := []req{
		{name: "200", target: "/devices/d1/status", auth: good, fast: true},
		{name: "200 with the caller's id and agent", target: "/devices/d1/status?x=1", auth: good, requestID: "proxy-7f3a:42", userAgent: "curl/8.5 \"q\"", fast: true},
		{name: "200 with a bad caller id", target: "/devices/d1/status", auth: good, requestID: "has space", fast: true},
		{name: "404", target: "/devices/nobody/status", auth: good, fast: true},
		{name: "400 malformed id", target: "/devices/_x/status", auth: good, fast: true},
		{name: "400 id too long", target: "/devices/" + strings.Repeat("a", 300) + "/status", auth: good, fast: true},
		{name: "400 dot dot", target: "/devices/../status", auth: good, fast: true},
		{name: "500 panic", target: "/devices/panic/status", auth: good, fast: true},
		{name: "503", target: "/devices/down/status", auth: good, fast: true},
		{name: "escaped path", target: "/devices/d%31/status", auth: good},
		{name: "escaped slash", target: "/devices/d%2F1/status", auth: good},
		{name: "empty id", target: "/devices//status", auth: good},
		{name: "trailing slash", target: "/devices/d1/status/", auth: good},
		{name: "HEAD", method: "HEAD", target: "/devices/d1/status", auth: good},
		{name: "POST", method: "POST", target: "/devices/d1/status", auth: good},
		{name: "403 host", target: "/devices/d1/status", host: "evil.example", auth: good},
		{name: "401 no credentials", target: "/devices/d1/status"},
		{name: "401 wrong password", target: "/devices/d1/status", auth: "bench:nope"},
		{name: "401 malformed header", target: "/devices/d1/status", auth: "!raw"},
		{name: "429 after three failures", target: "/devices/d1/status", auth: good},
		{name: "429 unknown device too", target: "/devices/nobody/status", auth: good},
	}
	idPattern := regexp.MustCompile(`^[0-9a-f]{12}-[0-9]+$`)
	for _, rq := range reqs {
		var answers [2]*httptest.ResponseRecorder
		var fellBack [2]int
		for i, s := range []*statusStack{fast, generic} {
			method := rq.method
			if method == "" {
				method = "GET"
			}
			r := httptest.NewRequest(method, rq.target, nil)
			r.RemoteAddr = "192.0.2.7:40000"
			r.Host = "127.0.0.1:3000"
			if rq.host != "" {
				r.Host = rq.host
			}
			switch {
			case rq.auth == "!raw":
				r.Header.Set("Authorization", "Basic !!!")
			case rq.auth != "":
				u, p, _ := strings.Cut(rq.auth, ":")
				r.SetBasicAuth(u, p)
			}
			if rq.requestID != "" {
				r.Header.Set("X-Request-Id", rq.requestID)
			}
			if rq.userAgent != "" {
				r.Header.Set("User-Agent", rq.userAgent)
			}
			before := s.fellBack
			w := httptest.NewRecorder()
			s.h.ServeHTTP(w, r)
			answers[i], fellBack[i] = w, s.fellBack-before
		}
		f, g := answers[0], answers[1]
		if f.Code != g.Code || f.Body.String() != g.Body.String() {
			t.Errorf("%s: fast %d %s\ngeneric %d %s", rq.name, f.Code, f.Body, g.Code, g.Body)
		}
		fh, gh := f.Header().Clone(), g.Header().Clone()
		if rq.requestID == "proxy-7f3a:42" {
			if fh.Get("X-Request-Id") != rq.requestID || gh.Get("X-Request-Id") != rq.requestID {
				t.Errorf("%s: the caller's id was not kept: %q, %q", rq.name, fh.Get("X-Request-Id"), gh.Get("X-Request-Id"))
			}
		} else if !idPattern.MatchString(fh.Get("X-Request-Id")) || !idPattern.MatchString(gh.Get("X-Request-Id")) {
			t.Errorf("%s: request ids %q and %q", rq.name, fh.Get("X-Request-Id"), gh.Get("X-Request-Id"))
		}
		fh.Del("X-Request-Id")
		gh.Del("X-Request-Id")
		if !maps.EqualFunc(fh, gh, slices.Equal) {
			t.Errorf("%s: headers differ:\nfast    %v\ngeneric %v", rq.name, fh, gh)
		}
		if answeredFast := fellBack[0] == 0; answeredFast != rq.fast {
			t.Errorf("%s: answered by the fast route: %v, want %v", rq.name, answeredFast, rq.fast)
		}
		if rq.name == "200" && f.Code != 200 {
			t.Fatalf("the status route answers %d", f.Code)
		}
		if rq.name == "401 malformed header" {
			// Three failures from this client: the next requests are
			// throttled on both sides.
			if f.Code != 401 {
				t.Fatalf("%s: %d", rq.name, f.Code)
			}
		}
	}
	if got := answersOf(t, fast.access.String()); !slices.Equal(got, answersOf(t, generic.access.String())) {
		t.Errorf("access logs differ:\nfast\n%s\ngeneric\n%s", strings.Join(got, "\n"), strings.Join(answersOf(t, generic.access.String()), "\n"))
	}
	if got, want := answersOf(t, fast.errors.String()), answersOf(t, generic.errors.String()); !slices.Equal(got, want) || len(got) != 2 {
		t.Errorf("error logs differ (want the panic and the 503 on both):\nfast\n%s\ngeneric\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if got, want := requestCounts(t, fast.metrics), requestCounts(t, generic.metrics); !slices.Equal(got, want) {
		t.Errorf("metrics differ:\nfast\n%s\ngeneric\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// answersOf returns the JSON log lines in logs with what differs between
// two runs of the same requests taken out: times, durations, generated
// request ids and stacks.
func answersOf(t *testing.T, logs string) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %s", line)
		}
		for _, k := range []string{"time", "duration_ms", "stack"} {
			if _, ok := m[k]; ok {
				m[k] = "…"
			}
		}
		if id, ok := m["request_id"].(string); ok && id != "proxy-7f3a:42" {
			m["request_id"] = "generated"
		}
		b, _ := json.Marshal(m)
		out = append(out, string(b))
	}
	return out
}

// requestCounts returns the request counters and the durations' counts
// in the exposition format.
func requestCounts(t *testing.T, m *middleware.Metrics) []string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	var out []string
	sc := bufio.NewScanner(w.Body)
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "gowa_http_requests_total{") || strings.HasPrefix(l, "gowa_http_request_duration_seconds_count{") {
			out = append(out, l)
		}
	}
	if len(out) == 0 {
		t.Fatal("no request metrics")
	}
	return out
}

// flippingDevice is d1, in the state its field says at each call.
type flippingDevice struct {
	statusDevices
	state *domain.State
}

func (f flippingDevice) Get(_ context.Context, id string) (domain.Status, error) {
	return domain.Status{DeviceID: id, State: *f.state}, nil
}

// The status route reuses its last answer only while the status is the
// same.
func TestStatusRouteAnswersTheCurrentStatus(t *testing.T) {
	t.Parallel()
	state := domain.StateDisconnected
	h := NewHandler(Config{Devices: flippingDevice{state: &state}})
	for _, s := range []domain.State{domain.StateDisconnected, domain.StateDisconnected, domain.StateConnecting, domain.StateConnected, domain.StateDisconnected} {
		state = s
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/devices/d1/status", nil))
		if !strings.Contains(w.Body.String(), `"state":"`+string(s)+`"`) {
			t.Fatalf("state %s answered as %s", s, w.Body)
		}
	}
}
