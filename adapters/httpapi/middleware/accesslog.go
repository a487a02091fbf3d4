package middleware

import (
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// AccessLog writes one line to out, "http request" at level INFO, per
// request when it completes: method, path, route (the chi pattern, when one
// matched), status, duration_ms, bytes, client_ip, request_id and, where
// the request has them, device_id, forwarded_to or forwarded_from (the
// replica it was handed to, or came from) and user_agent. Every value taken from
// the request is cut by Bound, for refused requests too. It never logs
// other headers, the query string or bodies, since those carry credentials,
// QR texts, pairing codes and messages.
//
// A line has the shape and keys of a log/slog JSON handler's record
// ({"time":…,"level":"INFO","msg":"http request",…}), so it sits in the
// same stream as the gateway's other logs, but it is encoded here, into a
// pooled buffer, and written with one Write: every request pays for this
// line, and slog's generic encoding was the largest cost of the hot path.
// out must take each Write whole (the gateway's log writer does); a nil
// out discards the lines.
//
// It belongs outside Recoverer, so that a panic is logged as the 500 the
// client got, and inside ClientIP and RequestID.
func AccessLog(out io.Writer) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := record(w)
			defer func() {
				// Deferred, so that a request whose handler aborts with a
				// panic is logged too (as the panic unwinds).
				writeAccessLine(out, r, rec, start)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// linePool holds the buffers lines are encoded into.
var linePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

func writeAccessLine(out io.Writer, r *http.Request, rec *recorder, start time.Time) {
	end := time.Now()
	route, rctx := rec.routeFor(r)
	WriteAccessLine(out, r, &AccessLine{
		Start: start, End: end, Route: route, Status: rec.finalStatus(), Bytes: rec.bytes,
		ClientIP: ClientIPFrom(r.Context()), RequestID: RequestIDFrom(r.Context()), DeviceID: deviceID(r, rctx),
	})
}

// AccessLine is what AccessLog records of a request beside the request
// itself (method, path and user agent come from it).
type AccessLine struct {
	Start, End time.Time // from before the first middleware to after the answer
	Route      string    // the chi route pattern, "" when none matched
	Status     int
	Bytes      int64 // of the answer's body
	ClientIP   string
	RequestID  string
	DeviceID   string // the {device_id} path parameter or X-Device-Id, "" for none
}

// WriteAccessLine writes the access log line of r to out (nil discards
// it), exactly as AccessLog does: for a handler that answers requests
// outside AccessLog (the fast status route) and must log them the same.
func WriteAccessLine(out io.Writer, r *http.Request, l *AccessLine) {
	if out == nil {
		return
	}
	bp := linePool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, `{"time":"`...)
	b = appendLogTime(b, l.End)
	b = append(b, `","level":"INFO","msg":"http request","method":`...)
	b = appendJSONString(b, Bound(r.Method))
	b = append(b, `,"path":`...)
	b = appendJSONString(b, Bound(r.URL.Path))
	b = append(b, `,"route":`...)
	b = appendJSONString(b, l.Route)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(l.Status), 10)
	b = append(b, `,"duration_ms":`...)
	b = appendMillis(b, l.End.Sub(l.Start))
	b = append(b, `,"bytes":`...)
	b = strconv.AppendInt(b, l.Bytes, 10)
	b = append(b, `,"client_ip":`...)
	b = appendJSONString(b, Bound(l.ClientIP))
	b = append(b, `,"request_id":`...)
	b = appendJSONString(b, Bound(l.RequestID))
	if l.DeviceID != "" {
		b = append(b, `,"device_id":`...)
		b = appendJSONString(b, Bound(l.DeviceID))
	}
	if info := infoFrom(r.Context()); info != nil {
		if info.forwardedTo != "" {
			b = append(b, `,"forwarded_to":`...)
			b = appendJSONString(b, Bound(info.forwardedTo))
		}
		if info.forwardedFrom != "" {
			b = append(b, `,"forwarded_from":`...)
			b = appendJSONString(b, Bound(info.forwardedFrom))
		}
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		b = append(b, `,"user_agent":`...)
		b = appendJSONString(b, Bound(ua))
	}
	b = append(b, "}\n"...)
	_, _ = out.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		linePool.Put(bp)
	}
}

// logSecond is the text of the second (and its zone) a line was written
// in last: lines come many a second, so only the fraction is formatted.
var logSecond atomic.Pointer[secondText]

type secondText struct {
	sec          int64
	loc          *time.Location
	prefix, zone string // "2026-12-01T13:00:05", "Z" or "+07:00"
}

// appendLogTime appends t as t.AppendFormat(b, time.RFC3339Nano) does
// (log/slog's time format), for years 0 to 9999.
func appendLogTime(b []byte, t time.Time) []byte {
	st := logSecond.Load()
	if st == nil || st.sec != t.Unix() || st.loc != t.Location() {
		st = &secondText{sec: t.Unix(), loc: t.Location(), prefix: t.Format("2006-01-02T15:04:05"), zone: t.Format("Z07:00")}
		logSecond.Store(st)
	}
	b = append(b, st.prefix...)
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, st.zone...)
}

// appendMillis appends d in milliseconds with microsecond precision, the
// shortest way (0.125, 3, 1500.5).
func appendMillis(b []byte, d time.Duration) []byte {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	b = strconv.AppendInt(b, us/1000, 10)
	frac := us % 1000
	if frac == 0 {
		return b
	}
	digits := [3]byte{byte('0' + frac/100), byte('0' + frac/10%10), byte('0' + frac%10)}
	n := 3
	for digits[n-1] == '0' {
		n--
	}
	b = append(b, '.')
	return append(b, digits[:n]...)
}

// routeOf is the chi route for r, such as "/devices/{device_id}", or ""
// when none matches, with the routing context holding its URL parameters.
// chi fills the request's routing context as it routes, so this is only
// complete after the handler ran. A request answered before routing (a
// 401, a 413, a 429) is looked up in the router without being served, so
// it is still logged and counted under its route.
func routeOf(r *http.Request) (string, *chi.Context) {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return "", nil
	}
	if p := rctx.RoutePattern(); p != "" || rctx.Routes == nil {
		return p, rctx
	}
	path := rctx.RoutePath
	if path == "" {
		path = r.URL.RawPath
	}
	if path == "" {
		path = r.URL.Path
	}
	probe := chi.NewRouteContext()
	return rctx.Routes.Find(probe, r.Method, path), probe
}

// deviceID is the device a request names: the {device_id} path parameter,
// or else the X-Device-Id header.
func deviceID(r *http.Request, rctx *chi.Context) string {
	if rctx != nil {
		if id := rctx.URLParam("device_id"); id != "" {
			return id
		}
	}
	return r.Header.Get("X-Device-Id")
}

// appendJSONString appends s as log/slog quotes it.
func appendJSONString(b []byte, s string) []byte { return envelope.AppendString(b, s, false) }
