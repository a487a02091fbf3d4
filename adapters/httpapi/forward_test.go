package httpapi_test

import (
	"cmp"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
)

// cluster is the fake lease table two replicas route by: which replica
// holds each device, and where each replica is reached.
type cluster struct {
	mu     sync.Mutex
	holder map[string]string // device → replica
	urls   map[string]string // replica → advertised URL
	down   bool              // the database cannot be reached
	// loggedIn are the devices logged in on any replica.
	loggedIn []string
	// retryFor is how long the replicas retry a device changing hands
	// (default 300 ms, for the tests that wait for the 503).
	retryFor time.Duration
	// answerWait bounds a holder's answer (default: the forwarder's).
	answerWait time.Duration
	// now, when set, is the replicas' clock.
	now func() time.Time
}

func (c *cluster) set(device, replica string) {
	c.mu.Lock()
	c.holder[device] = replica
	c.mu.Unlock()
}

// routerOf is replica self's view of c, as its Coordinator would give it.
type routerOf struct {
	mu   sync.Mutex
	c    *cluster
	self string
	// seen counts Route calls, to tell that a retry routed again.
	seen atomic.Int32
	// onRoute, when set, runs at each Route call before it answers.
	onRoute func()
}

// believe makes the replica route by view from now on (a replica whose
// idea of the leases differs from the others').
func (r *routerOf) believe(view *cluster) {
	r.mu.Lock()
	r.c = view
	r.mu.Unlock()
}

func (r *routerOf) Route(_ context.Context, id string) (httpapi.Route, error) {
	r.seen.Add(1)
	r.mu.Lock()
	c, hook := r.c, r.onRoute
	r.mu.Unlock()
	if hook != nil {
		hook()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		return httpapi.Route{}, domain.Errorf(domain.EUNAVAILABLE, "database down")
	}
	h := c.holder[id]
	if h == "" || h == r.self {
		return httpapi.Route{Local: true}, nil
	}
	return httpapi.Route{Holder: h, URL: c.urls[h], RetryAfter: 2500 * time.Millisecond}, nil
}

// replicaDevices is one replica's device service: it answers for the
// devices it is given, and records the sends it makes.
type replicaDevices struct {
	oneDevice
	name  string
	calls atomic.Int32
	// leaving, when set, tells the devices this replica is handing over:
	// their calls are refused as moving.
	leaving func(id string) bool
	sends   chan [3]string
}

func (d *replicaDevices) Get(_ context.Context, id string) (domain.Status, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return domain.Status{}, err
	}
	d.calls.Add(1)
	return domain.Status{DeviceID: id, State: domain.StateConnected, LastError: "served by " + d.name}, nil
}

func (d *replicaDevices) Reconnect(_ context.Context, id string) (domain.Status, error) {
	if d.leaving != nil && d.leaving(id) {
		return domain.Status{}, domain.Wrap(domain.EUNAVAILABLE, domain.ErrMoving, "device "+id+" is moving to another replica; try again")
	}
	d.calls.Add(1)
	return domain.Status{DeviceID: id, State: domain.StateConnecting, LastError: "served by " + d.name}, nil
}

func (d *replicaDevices) Send(_ context.Context, id, to, text string) (domain.SentMessage, string, error) {
	d.calls.Add(1)
	d.sends <- [3]string{id, to, text}
	return domain.SentMessage{ID: "m-" + d.name, Timestamp: time.Unix(1700000000, 0)}, id, nil
}

type replica struct {
	url    string
	dev    *replicaDevices
	router *routerOf
	logs   *syncBuffer
}

var testKey = []byte("0123456789abcdef0123456789abcdef")

// twoReplicas starts replicas "A" and "B" on loopback, with the same
// credentials and key, routing by c.
func twoReplicas(t *testing.T, c *cluster) (a, b *replica) {
	t.Helper()
	start := func(name string) *replica {
		creds, err := middleware.ParseCredentials("ops:pw")
		if err != nil {
			t.Fatal(err)
		}
		auth, err := middleware.NewAuth(creds, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		rp := &replica{dev: &replicaDevices{name: name, sends: make(chan [3]string, 4)}, router: &routerOf{c: c, self: name}, logs: &syncBuffer{}}
		srv := httptest.NewServer(httpapi.NewHandler(httpapi.Config{
			Devices:   rp.dev,
			Auth:      auth,
			AccessLog: rp.logs,
			Forwarding: &httpapi.Forwarding{
				Router:     rp.router,
				Self:       name,
				Key:        testKey,
				RetryFor:   cmp.Or(c.retryFor, 300*time.Millisecond),
				AnswerWait: c.answerWait,
				Now:        c.now,
				LoggedIn: func(context.Context) ([]string, error) {
					c.mu.Lock()
					defer c.mu.Unlock()
					return c.loggedIn, nil
				},
			},
		}))
		t.Cleanup(srv.Close)
		rp.url = srv.URL
		c.mu.Lock()
		c.urls[name] = srv.URL
		c.mu.Unlock()
		return rp
	}
	return start("A"), start("B")
}

func newCluster() *cluster {
	return &cluster{holder: map[string]string{}, urls: map[string]string{}}
}

type answer struct {
	status int
	header http.Header
	env    struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
}

func call(t *testing.T, method, url, body string, hdr ...string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.SetBasicAuth("ops", "pw")
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Authorization" && hdr[i+1] == "" {
			req.Header.Del("Authorization")
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &a.env); err != nil {
		t.Fatalf("%s %s: not the envelope: %q", method, url, raw)
	}
	if a.env.Code != resp.StatusCode {
		t.Errorf("%s %s: envelope code %d, status %d", method, url, a.env.Code, resp.StatusCode)
	}
	return a
}

// lastLine is the access log line of the request with id reqID.
func lastLine(t *testing.T, logs *syncBuffer, reqID string) map[string]any {
	t.Helper()
	var found map[string]any
	for _, l := range logs.lines(t) {
		if l["request_id"] == reqID {
			found = l
		}
	}
	if found == nil {
		t.Fatalf("no access log line for request %s in:\n%s", reqID, logs.String())
	}
	return found
}

// A request for a device the other replica holds is answered by that
// replica, with the caller's request id, credentials and body; both access
// logs record it, the holder's under the caller's address.
func TestForwardToTheHolder(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("on-b", "B")

	got := call(t, "GET", a.url+"/devices/on-b/status", "", "X-Request-Id", "caller-id-1")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by B") {
		t.Fatalf("status through A: %d %s", got.status, got.env.Data)
	}
	if got.header.Get("X-Request-Id") != "caller-id-1" {
		t.Errorf("request id %q, want the caller's", got.header.Get("X-Request-Id"))
	}
	if a.dev.calls.Load() != 0 {
		t.Errorf("A's device service was called for B's device")
	}
	la, lb := lastLine(t, a.logs, "caller-id-1"), lastLine(t, b.logs, "caller-id-1")
	if la["forwarded_to"] != "B" || la["status"] != float64(200) || la["device_id"] != "on-b" {
		t.Errorf("A's access line: %v", la)
	}
	if lb["forwarded_from"] != "A" || lb["client_ip"] != la["client_ip"] {
		t.Errorf("B's access line: %v (A's: %v)", lb, la)
	}

	// A send, chosen by X-Device-Id, with its body.
	got = call(t, "POST", a.url+"/send/message", `{"phone":"628123456789","message":"hello"}`, "X-Device-Id", "on-b")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "m-B") {
		t.Fatalf("send through A: %d %s", got.status, got.env.Data)
	}
	if s := <-b.dev.sends; s != [3]string{"on-b", "628123456789", "hello"} {
		t.Errorf("B sent %v", s)
	}

	// A device this replica holds is served here.
	got = call(t, "GET", a.url+"/devices/on-a/status", "")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by A") {
		t.Errorf("A's own device: %d %s", got.status, got.env.Data)
	}
}

// The edge checks credentials before it forwards: a caller without them
// never reaches the holder.
func TestForwardAfterAuth(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("on-b", "B")
	got := call(t, "POST", a.url+"/devices/on-b/reconnect", "", "Authorization", "")
	if got.status != 401 {
		t.Fatalf("without credentials: %d", got.status)
	}
	if b.dev.calls.Load() != 0 || strings.Contains(b.logs.String(), "/devices/on-b") {
		t.Errorf("B saw a request A refused:\n%s", b.logs.String())
	}
}

// A replica that gets a forwarded request for a device it does not hold
// refuses it (never a second hop), and the first replica routes again
// until the handoff ends, then answers 503 with Retry-After: two replicas
// that disagree cannot pass a request back and forth.
func TestForwardedNeverForwardsAgain(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	// A believes B holds it; B believes A does.
	c.set("split", "B")
	b.router.believe(&cluster{holder: map[string]string{"split": "A"}, urls: c.urls})

	got := call(t, "POST", a.url+"/devices/split/reconnect", "", "X-Request-Id", "split-1")
	if got.status != 503 || got.header.Get("Retry-After") != "3" {
		t.Fatalf("disagreeing replicas: %d Retry-After %q %s", got.status, got.header.Get("Retry-After"), got.env.Message)
	}
	if got.header.Get("X-Gowa-Not-Holder") != "" {
		t.Errorf("the internal refusal reached the caller")
	}
	if a.dev.calls.Load()+b.dev.calls.Load() != 0 {
		t.Errorf("a device service ran the request")
	}
	if n := a.router.seen.Load(); n < 2 {
		t.Errorf("A routed %d times; it should route again after B's refusal", n)
	}
	for _, l := range b.logs.lines(t) {
		if l["forwarded_to"] != nil {
			t.Errorf("B forwarded a forwarded request: %v", l)
		}
	}
}

// During a handoff the holder refuses; once the lease moves here, the
// request is served here, and the caller sees one answer.
func TestForwardRetriesAcrossAHandoff(t *testing.T) {
	t.Parallel()
	c := newCluster()
	c.retryFor = time.Minute // the test ends when A serves it, not at a deadline
	a, b := twoReplicas(t, c)
	c.set("moving", "B")
	// B has already dropped it; it comes to A when B's router is asked.
	b.router.believe(&cluster{holder: map[string]string{"moving": "A"}, urls: c.urls})
	// The moment B is asked (and refuses), A learns it holds the device:
	// A's next try, after its wait, serves it here.
	b.router.mu.Lock()
	b.router.onRoute = func() { c.set("moving", "A") }
	b.router.mu.Unlock()
	got := call(t, "POST", a.url+"/devices/moving/reconnect", "")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by A") {
		t.Fatalf("after the handoff: %d %s", got.status, got.env.Message)
	}
}

// A holder that cannot be reached (it died; its lease has not lapsed) gets
// a 503 with the seconds until its lease lapses, for commands; reads are
// answered from the shared store here.
func TestHolderUnreachable(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, _ := twoReplicas(t, c)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c.mu.Lock()
	c.urls["C"] = dead.URL
	c.mu.Unlock()
	c.set("on-c", "C")

	got := call(t, "POST", a.url+"/devices/on-c/reconnect", "")
	if got.status != 503 || got.header.Get("Retry-After") != "3" || !strings.Contains(got.env.Message, "does not answer") {
		t.Errorf("command for a dead holder: %d Retry-After %q %q", got.status, got.header.Get("Retry-After"), got.env.Message)
	}
	got = call(t, "GET", a.url+"/devices/on-c/status", "")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by A") {
		t.Errorf("read for a dead holder: %d %s", got.status, got.env.Data)
	}

	c.mu.Lock()
	c.down = true
	c.mu.Unlock()
	got = call(t, "POST", a.url+"/devices/on-c/reconnect", "")
	if got.status != 503 || got.header.Get("Retry-After") != "1" || got.env.Message != "database down" {
		t.Errorf("database down: %d Retry-After %q %q", got.status, got.header.Get("Retry-After"), got.env.Message)
	}
}

// The internal header from outside grants nothing: credentials are still
// needed, the caller's address is not replaced, and the request is served
// here or refused, never forwarded.
func TestForgedForwardingMark(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("on-b", "B")
	forged := "v1 B " + "1700000000" + " 203.0.113.9 " + strings.Repeat("ab", 32)

	got := call(t, "GET", a.url+"/devices/on-b/status", "", "Authorization", "", httpapi.ForwardedHeader, forged)
	if got.status != 401 {
		t.Errorf("forged mark without credentials: %d", got.status)
	}
	got = call(t, "POST", a.url+"/devices/on-b/reconnect", "", httpapi.ForwardedHeader, forged, "X-Request-Id", "forged-2")
	if got.status != 503 || got.header.Get("X-Gowa-Not-Holder") != "" {
		t.Errorf("forged mark for another replica's device: %d, not-holder %q", got.status, got.header.Get("X-Gowa-Not-Holder"))
	}
	if b.dev.calls.Load() != 0 {
		t.Errorf("the forged request reached B")
	}
	if l := lastLine(t, a.logs, "forged-2"); l["client_ip"] == "203.0.113.9" || l["forwarded_from"] != nil {
		t.Errorf("the forged mark was believed: %v", l)
	}
}

// Requests that are not device-scoped, and malformed ids, are served
// here as always.
func TestNotDeviceScopedStaysLocal(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("on-b", "B")
	if got := call(t, "GET", a.url+"/devices", ""); got.status != 200 {
		t.Errorf("list: %d", got.status)
	}
	if got := call(t, "GET", a.url+"/devices/-bad-/status", ""); got.status != 400 {
		t.Errorf("malformed id: %d", got.status)
	}
	if b.dev.calls.Load() != 0 || strings.Contains(b.logs.String(), "http request") {
		t.Errorf("B saw requests A serves:\n%s", b.logs.String())
	}
}

// A send without X-Device-Id goes to the one device logged in on any
// replica; with several logged in anywhere, it is refused.
func TestSendToTheSoleDevice(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("on-b", "B")
	c.loggedIn = []string{"on-b"}
	got := call(t, "POST", a.url+"/send/message", `{"phone":"628123456789","message":"hi"}`)
	if got.status != 200 || !strings.Contains(string(got.env.Data), "m-B") {
		t.Fatalf("send without a device id: %d %s", got.status, got.env.Message)
	}
	if s := <-b.dev.sends; s[0] != "on-b" {
		t.Errorf("B sent from %q", s[0])
	}
	c.mu.Lock()
	c.loggedIn = []string{"on-a", "on-b"}
	c.mu.Unlock()
	got = call(t, "POST", a.url+"/send/message", `{"phone":"628123456789","message":"hi"}`)
	if got.status != 400 || !strings.Contains(got.env.Message, "X-Device-Id") {
		t.Errorf("several logged in: %d %q", got.status, got.env.Message)
	}
}

// A call served here while the device leaves this replica (refused as
// moving: nothing was done) is routed again, to the new holder; the caller
// sees one answer, from it.
func TestLocalCallRoutedAgainWhenTheDeviceLeaves(t *testing.T) {
	t.Parallel()
	c := newCluster()
	a, b := twoReplicas(t, c)
	c.set("leaving", "A")
	a.dev.leaving = func(id string) bool {
		// A hands it to B as it refuses.
		c.set(id, "B")
		return true
	}
	got := call(t, "POST", a.url+"/devices/leaving/reconnect", "")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by B") {
		t.Fatalf("a call during the handoff: %d %q", got.status, got.env.Message)
	}
	if got.header.Get("X-Gowa-Not-Holder") != "" {
		t.Errorf("the internal mark reached the caller")
	}
	if b.dev.calls.Load() != 1 {
		t.Errorf("B served %d calls", b.dev.calls.Load())
	}
}

// The time a call spent being served before the device turned out to be
// leaving (a send queued behind others on a busy device) does not count
// against the time for finding the device's new replica: RetryFor starts
// at the refusal.
func TestRetryForStartsAtTheRefusal(t *testing.T) {
	t.Parallel()
	c := newCluster()
	var (
		mu  sync.Mutex
		now = time.Now()
	)
	c.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	a, b := twoReplicas(t, c) // RetryFor 300 ms
	c.set("busy", "A")
	a.dev.leaving = func(id string) bool {
		// Queued on A for longer than RetryFor, then refused: the device
		// went to B meanwhile.
		mu.Lock()
		now = now.Add(time.Second)
		mu.Unlock()
		c.set(id, "B")
		return true
	}
	got := call(t, "POST", a.url+"/devices/busy/reconnect", "")
	if got.status != 200 || !strings.Contains(string(got.env.Data), "served by B") {
		t.Fatalf("a call refused after a long wait on the old holder: %d %q", got.status, got.env.Message)
	}
	if b.dev.calls.Load() != 1 {
		t.Errorf("B served %d calls", b.dev.calls.Load())
	}
}

// A holder that takes the request and never answers (paused, wedged) gets
// the caller a 503 once the answer wait is over, saying the request may
// have been carried out; the caller is not held until it gives up.
func TestHolderThatNeverAnswers(t *testing.T) {
	t.Parallel()
	c := newCluster()
	c.answerWait = 200 * time.Millisecond
	a, _ := twoReplicas(t, c)
	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
	}))
	t.Cleanup(hung.Close)
	t.Cleanup(func() { close(release) })
	c.mu.Lock()
	c.urls["C"] = hung.URL
	c.mu.Unlock()
	c.set("on-c", "C")

	got := call(t, "POST", a.url+"/devices/on-c/reconnect", "")
	if got.status != 503 || got.header.Get("Retry-After") == "" || !strings.Contains(got.env.Message, "may not have been carried out") {
		t.Errorf("a holder that never answers: %d Retry-After %q %q", got.status, got.header.Get("Retry-After"), got.env.Message)
	}
}
