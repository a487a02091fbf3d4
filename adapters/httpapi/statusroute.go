package httpapi

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
)

// statusRoute answers GET /devices/{device_id}/status, the API's hot path
// (clients poll it), without the generic stack's routing, generated
// wrapper, strict handler and request copies, and hands every other
// request to that stack (next). It keeps every behaviour of the generic
// route: the same request id, site guard, throttle and Basic auth, the
// same answer (deviceAnswer, or writeError's envelope), the same access log
// line and metrics series, the same panic handling.
//
// It answers only what it can answer exactly alike: a plain GET whose
// path needs no unescaping, without a body, that the site guard, the
// throttle and the credentials all let through. Everything else, refusals
// included, goes to next, which checks again and answers (and counts a
// failed login) as for any other route; the checks here have no effect
// beyond what a passing request has there. TestStatusRouteMatchesGeneric
// holds the two to the same bytes.
type statusRoute struct {
	srv  *server
	next http.Handler // the generic stack, RequestContext outermost

	ids      *middleware.RequestIDs // shared with next
	proxies  *middleware.TrustedProxies
	sites    *middleware.SiteGuard
	throttle *middleware.Throttle
	auth     *middleware.Auth
	access   io.Writer                 // nil discards the lines
	metrics  *middleware.Metrics       // nil counts nothing
	okSeries *middleware.RequestSeries // the 200s, looked up once

	last atomic.Pointer[encodedStatus] // see encode
}

// statusPattern is the route's chi pattern, as logged and counted.
const statusPattern = "/devices/{device_id}/status"

func newStatusRoute(srv *server, next http.Handler, ids *middleware.RequestIDs, cfg Config) *statusRoute {
	f := &statusRoute{
		srv: srv, next: next, ids: ids,
		proxies: cfg.Proxies, sites: cfg.Sites, throttle: cfg.Throttle, auth: cfg.Auth,
		access: cfg.AccessLog, metrics: cfg.Metrics,
	}
	if f.metrics != nil {
		f.okSeries = f.metrics.Series(statusPattern, http.MethodGet, http.StatusOK)
	}
	return f
}

func (f *statusRoute) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !f.serve(w, r) {
		f.next.ServeHTTP(w, r)
	}
}

// statusDeviceID returns the device id of a request this route may
// answer, or false.
func statusDeviceID(r *http.Request) (string, bool) {
	if r.Method != http.MethodGet || r.URL.RawPath != "" || r.ContentLength != 0 ||
		(r.Body != nil && r.Body != http.NoBody) {
		return "", false
	}
	id, ok := strings.CutPrefix(r.URL.Path, "/devices/")
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, "/status")
	if !ok || id == "" || strings.IndexByte(id, '/') >= 0 {
		return "", false
	}
	return id, true
}

// serve answers r and reports true, or reports false, having written
// nothing, when r is for next.
func (f *statusRoute) serve(w http.ResponseWriter, r *http.Request) bool {
	id, ok := statusDeviceID(r)
	if !ok {
		return false
	}
	start := time.Now()
	ip, scheme := middleware.ResolveClient(f.proxies, r)
	if !f.sites.Allows(r) || f.throttle.Refuses(ip) || !f.auth.Allows(r) {
		return false
	}
	info := f.ids.Assign(w, r, ip, scheme)
	status, n := f.answer(w, r, info, id)
	end := time.Now()
	if f.metrics != nil {
		s := f.okSeries
		if status != http.StatusOK {
			s = f.metrics.Series(statusPattern, http.MethodGet, status)
		}
		s.Observe(end.Sub(start))
	}
	middleware.WriteAccessLine(f.access, r, &middleware.AccessLine{
		Start: start, End: end, Route: statusPattern, Status: status, Bytes: n,
		ClientIP: ip, RequestID: info.ID(), DeviceID: id,
	})
	return true
}

// answer writes the device's status, or the error, and returns the status
// and body size the client got, as the generic stack's recorder counts them.
func (f *statusRoute) answer(w http.ResponseWriter, r *http.Request, info *middleware.RequestInfo, id string) (status int, n int64) {
	st, err, panicked := f.get(r, id)
	if err == nil && !panicked {
		body := f.encode(st)
		w.Header()["Content-Type"] = jsonContentType
		w.WriteHeader(http.StatusOK)
		written, _ := w.Write(body)
		return http.StatusOK, int64(written)
	}
	// The rare paths answer through a counting writer and a request
	// carrying the request's info, as writeError and the recoverer expect.
	cw := &countingWriter{ResponseWriter: w}
	er := r.WithContext(middleware.NewContext(r.Context(), info))
	if panicked {
		envelope.Error(cw, http.StatusInternalServerError, "internal error")
	} else {
		writeError(f.srv.log, cw, er, err)
	}
	return cw.status, cw.bytes
}

// encode returns st's answer as deviceAnswer writes it, from the last
// answer when st is the status it encodes: clients poll, and a device's
// status changes far less often than it is asked for. The bytes are
// shared between requests, never written to.
func (f *statusRoute) encode(st domain.Status) []byte {
	if last := f.last.Load(); last != nil && last.st == st {
		return last.body
	}
	a := deviceAnswer{status: http.StatusOK, message: ok}
	f.srv.fillDevice(&a.device, &a.strings, st)
	e := &encodedStatus{st: st, body: a.appendJSON(nil)}
	f.last.Store(e)
	return e.body
}

// encodedStatus is a status and its answer's bytes.
type encodedStatus struct {
	st   domain.Status
	body []byte
}

// get is the device service's Get, with a panic in it logged as the
// generic stack's recoverer logs it, and reported.
func (f *statusRoute) get(r *http.Request, id string) (st domain.Status, err error, panicked bool) {
	defer func() {
		if v := recover(); v != nil {
			middleware.Recovered(f.srv.log, r, v)
			panicked = true
		}
	}()
	st, err = f.srv.devices.Get(r.Context(), id)
	return st, err, false
}

// countingWriter remembers the status and counts the body's bytes.
type countingWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (c *countingWriter) WriteHeader(status int) {
	if c.status == 0 {
		c.status = status
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *countingWriter) Write(b []byte) (int, error) {
	if c.status == 0 {
		c.status = http.StatusOK
	}
	n, err := c.ResponseWriter.Write(b)
	c.bytes += int64(n)
	return n, err
}
