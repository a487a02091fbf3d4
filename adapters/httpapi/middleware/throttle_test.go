package middleware_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

// fakeClock is a clock the test moves by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// throttled sends a request from ip through the throttle (behind ClientIP,
// with nobody trusted) and returns the answer.
func throttled(th *middleware.Throttle, ip string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "/devices", nil)
	req.RemoteAddr = ip + ":1234"
	rec := httptest.NewRecorder()
	middleware.ClientIP(nil)(th.Middleware(ok)).ServeHTTP(rec, req)
	return rec
}

func TestThrottle(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	th := middleware.NewThrottle(3, time.Minute, clock.Now)
	const ip, other = "203.0.113.7", "198.51.100.9"

	for i := range 2 {
		th.Fail(ip)
		if rec := throttled(th, ip); rec.Code != 200 {
			t.Fatalf("after %d failures: %d", i+1, rec.Code)
		}
		clock.Advance(10 * time.Second)
	}
	// Failures at 0s, 10s, now 20s: the limit is reached.
	th.Fail(ip)
	rec := throttled(th, ip)
	if rec.Code != http.StatusTooManyRequests {
		t.Fatalf("at the limit: %d", rec.Code)
	}
	var env struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    any    `json:"data"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Code != 429 || env.Message == "" || env.Data != nil {
		t.Fatalf("429 body %q", rec.Body)
	}
	// The oldest failure (at 0s) leaves the window at 60s, 40s from now.
	if got := rec.Header().Get("Retry-After"); got != "40" {
		t.Fatalf("Retry-After %q, want 40", got)
	}
	if rec := throttled(th, other); rec.Code != 200 {
		t.Fatalf("another IP is throttled too: %d", rec.Code)
	}

	// The window slides: just before the oldest failure leaves, still
	// refused; once it leaves, let through.
	clock.Advance(39*time.Second + 500*time.Millisecond)
	rec = throttled(th, ip)
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "1" {
		t.Fatalf("half a second before: %d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
	clock.Advance(500 * time.Millisecond)
	if rec := throttled(th, ip); rec.Code != 200 {
		t.Fatalf("after the oldest failure left the window: %d", rec.Code)
	}
	// One more failure reaches the limit again (10s, 20s, 60s).
	th.Fail(ip)
	rec = throttled(th, ip)
	if rec.Code != 429 {
		t.Fatalf("again at the limit: %d", rec.Code)
	}
	if got, _ := strconv.Atoi(rec.Header().Get("Retry-After")); got != 10 {
		t.Fatalf("Retry-After %d, want 10", got)
	}
	clock.Advance(time.Hour)
	if rec := throttled(th, ip); rec.Code != 200 {
		t.Fatalf("an hour later: %d", rec.Code)
	}
}

func TestThrottleManyFailuresKeepsLatest(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th := middleware.NewThrottle(2, time.Minute, clock.Now)
	for range 100 {
		th.Fail("192.0.2.1")
		clock.Advance(time.Second)
	}
	// The latest two failures were 2s and 1s ago: refused for 58s more.
	rec := throttled(th, "192.0.2.1")
	if rec.Code != 429 || rec.Header().Get("Retry-After") != "58" {
		t.Fatalf("%d Retry-After %q", rec.Code, rec.Header().Get("Retry-After"))
	}
}

func TestThrottleDisabled(t *testing.T) {
	t.Parallel()
	th := middleware.NewThrottle(0, time.Minute, nil)
	for range 50 {
		th.Fail("192.0.2.1")
	}
	if rec := throttled(th, "192.0.2.1"); rec.Code != 200 {
		t.Fatalf("a limit of 0 throttled: %d", rec.Code)
	}
}

func TestThrottleBoundedMemory(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	th := middleware.NewThrottle(1, time.Minute, clock.Now)
	// Far more addresses than the throttle remembers.
	for i := range 30000 {
		th.Fail("10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255))
		clock.Advance(time.Microsecond)
	}
	// The latest are remembered; the oldest gave way.
	if rec := throttled(th, "10.0.117.47"); rec.Code != 429 { // i = 29999
		t.Fatalf("latest failure forgotten: %d", rec.Code)
	}
	if rec := throttled(th, "10.0.0.0"); rec.Code != 200 {
		t.Fatalf("oldest failure still remembered: %d", rec.Code)
	}
}

func TestThrottleConcurrent(t *testing.T) {
	t.Parallel()
	th := middleware.NewThrottle(5, time.Minute, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ip := "192.0.2." + strconv.Itoa(g)
			for range 100 {
				th.Fail(ip)
				throttled(th, ip)
			}
		}()
	}
	wg.Wait()
	if rec := throttled(th, "192.0.2.3"); rec.Code != 429 {
		t.Fatalf("%d", rec.Code)
	}
}

// TestThrottleIPv6Per64 counts IPv6 failures per /64: a client that picks
// a fresh address of its /64 for every guess is throttled all the same,
// and a neighbouring /64 is not.
func TestThrottleIPv6Per64(t *testing.T) {
	t.Parallel()
	clock := &fakeClock{t: time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)}
	th := middleware.NewThrottle(3, time.Minute, clock.Now)
	from := func(ip string) int {
		req := httptest.NewRequest("GET", "/devices", nil)
		req.RemoteAddr = "[" + ip + "]:1234"
		rec := httptest.NewRecorder()
		middleware.ClientIP(nil)(th.Middleware(ok)).ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range 3 {
		th.Fail("2001:db8:1:2::" + strconv.Itoa(i+1))
	}
	for _, ip := range []string{"2001:db8:1:2::99", "2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::1"} {
		if code := from(ip); code != http.StatusTooManyRequests {
			t.Errorf("%s, in the /64 that failed 3 times: %d, want 429", ip, code)
		}
	}
	for _, ip := range []string{"2001:db8:1:3::1", "2001:db8:1::1"} {
		if code := from(ip); code != http.StatusOK {
			t.Errorf("%s, another /64: %d, want 200", ip, code)
		}
	}
	// IPv4 stays per address, and IPv4-mapped IPv6 is the same address.
	for range 3 {
		th.Fail("192.0.2.1")
	}
	if code := from("::ffff:192.0.2.1"); code != http.StatusTooManyRequests {
		t.Errorf("mapped IPv4 of a throttled address: %d", code)
	}
	if code := from("::ffff:192.0.2.2"); code != http.StatusOK {
		t.Errorf("the next IPv4 address: %d", code)
	}
	clock.Advance(time.Minute)
	if code := from("2001:db8:1:2::99"); code != http.StatusOK {
		t.Errorf("after the window: %d", code)
	}
}
