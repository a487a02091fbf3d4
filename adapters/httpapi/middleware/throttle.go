package middleware

import (
	"math"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// maxThrottled bounds how many client IPs the throttle remembers, so a
// flood of failures from many addresses cannot grow it without limit.
const maxThrottled = 10000

// Throttle refuses clients that failed to authenticate too often: once an
// IP has limit failures within the sliding window, its requests get 429
// until the oldest of those failures leaves the window. Other IPs are not
// affected. It is safe for concurrent use.
type Throttle struct {
	limit  int
	window time.Duration
	now    func() time.Time

	// empty is true while fails is, so that clients pass without taking
	// the lock when nobody failed lately (the common case, and the hot
	// path's).
	empty atomic.Bool

	mu        sync.Mutex
	fails     map[string][]time.Time // per throttleKey, the latest ≤ limit failures, oldest first
	lastSweep time.Time
}

// NewThrottle returns a throttle allowing fewer than limit failed logins
// per client IP within window. now is the clock (time.Now when nil), to be
// faked in tests. A limit of 0 or less never throttles; a window of 0 or
// less is one minute.
func NewThrottle(limit int, window time.Duration, now func() time.Time) *Throttle {
	if window <= 0 {
		window = time.Minute
	}
	if now == nil {
		now = time.Now
	}
	t := &Throttle{limit: limit, window: window, now: now, fails: map[string][]time.Time{}}
	t.empty.Store(true)
	return t
}

// throttleKey is what failures are counted under: the IP itself for IPv4,
// its /64 for IPv6. One ordinary IPv6 subscriber or host gets a whole /64
// and can pick a fresh address in it for every guess, so counting full
// addresses would not throttle anyone.
func throttleKey(ip string) string {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return ip // not an IP (a Unix socket peer): count it as it is
	}
	a = a.Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.WithZone("").Prefix(64)
	return p.String()
}

// Fail records a failed authentication from ip, as ClientIPFrom gives it.
// IPv6 clients are counted per /64 (see throttleKey).
func (t *Throttle) Fail(ip string) {
	if t.limit <= 0 {
		return
	}
	ip = throttleKey(ip)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
	list, known := t.fails[ip]
	if !known && len(t.fails) >= maxThrottled {
		t.evictOldestLocked()
	}
	list = t.liveLocked(list, now)
	if len(list) >= t.limit {
		// Keep only the latest limit failures: older ones can only leave
		// the window sooner and never decide anything.
		list = append(list[:0], list[len(list)-t.limit+1:]...)
	}
	t.fails[ip] = append(list, now)
	t.empty.Store(false)
}

// retryAfter is how long ip stays refused, or 0 when it is not.
func (t *Throttle) retryAfter(ip string) time.Duration {
	if t.limit <= 0 || t.empty.Load() {
		return 0
	}
	ip = throttleKey(ip)
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	list, known := t.fails[ip]
	if !known {
		return 0 // the common case: a client that never failed
	}
	list = t.liveLocked(list, now)
	if len(list) == 0 {
		delete(t.fails, ip)
		t.empty.Store(len(t.fails) == 0)
		return 0
	}
	t.fails[ip] = list
	if len(list) < t.limit {
		return 0
	}
	return list[len(list)-t.limit].Add(t.window).Sub(now)
}

// Refuses tells whether requests from ip are refused now, without
// answering: a handler that answers requests outside Middleware (the fast
// status route) checks this and leaves the requests refused to Middleware.
// A nil throttle refuses no one.
func (t *Throttle) Refuses(ip string) bool {
	return t != nil && t.retryAfter(ip) > 0
}

// liveLocked drops the failures that left the window.
func (t *Throttle) liveLocked(list []time.Time, now time.Time) []time.Time {
	cut := now.Add(-t.window)
	i := 0
	for i < len(list) && !list[i].After(cut) {
		i++
	}
	return list[i:]
}

// sweepLocked forgets IPs whose failures all left the window, at most once
// a window. A full map is evictOldestLocked's to make room in: sweeping it
// on every failure would cost a scan per request under a flood.
func (t *Throttle) sweepLocked(now time.Time) {
	if now.Sub(t.lastSweep) < t.window {
		return
	}
	t.lastSweep = now
	for ip, list := range t.fails {
		if len(t.liveLocked(list, now)) == 0 {
			delete(t.fails, ip)
		}
	}
	t.empty.Store(len(t.fails) == 0)
}

// evictOldestLocked forgets the tenth of the IPs whose latest failures are
// the oldest, to make room when the map is full of live entries. Evicting a
// batch keeps the cost per new IP low under a flood.
func (t *Throttle) evictOldestLocked() {
	type seen struct {
		ip   string
		last time.Time
	}
	all := make([]seen, 0, len(t.fails))
	for ip, list := range t.fails {
		all = append(all, seen{ip, list[len(list)-1]})
	}
	slices.SortFunc(all, func(a, b seen) int { return a.last.Compare(b.last) })
	for _, s := range all[:max(len(all)/10, 1)] {
		delete(t.fails, s.ip)
	}
}

// Middleware answers 429 in the envelope, with Retry-After in whole
// seconds, to clients that have reached the failure limit, and passes
// everyone else on. It needs ClientIP upstream.
func (t *Throttle) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if wait := t.retryAfter(ClientIPFrom(r.Context())); wait > 0 {
			secs := int(math.Ceil(wait.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			envelope.Error(w, http.StatusTooManyRequests, "too many failed logins; retry later")
			return
		}
		next.ServeHTTP(w, r)
	})
}
