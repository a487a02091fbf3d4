package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
)

// Router says which replica serves a device, when several gateways share
// one database and each device is leased to exactly one of them.
type Router interface {
	// Route returns where the requests for deviceID are served now. It may
	// take the device's lease for this replica when nobody holds it (a
	// device nobody runs is run by the replica that got the call). An
	// error means the shared database could not be asked.
	Route(ctx context.Context, deviceID string) (Route, error)
}

// Route is where one device's requests go.
type Route struct {
	// Local is true when this replica serves the device.
	Local bool
	// Holder and URL name the replica that holds the device, and the URL
	// it advertises, when it is another one.
	Holder, URL string
	// RetryAfter is, when the device cannot be served now (Local false and
	// no URL, or the holder does not answer), how long until it may be:
	// until the holder's lease lapses, or a handoff ends.
	RetryAfter time.Duration
}

// Forwarding makes the HTTP edge of one replica among several: requests for
// a device another replica holds are handed to it, with the caller's
// headers (Authorization and X-Request-Id included) and body, so that a
// caller cannot tell which replica served it.
type Forwarding struct {
	Router Router
	// Self is this replica's id.
	Self string
	// Key signs the internal header that marks a request one replica hands
	// another (ForwardedHeader); every replica must have the same one.
	// Required, at least 32 bytes.
	Key []byte
	// Transport carries forwarded requests; nil: a transport of its own.
	Transport http.RoundTripper
	// RetryFor is how long a request is retried, re-routed each time, while
	// its device's holder cannot take it because the device is changing
	// hands (the holder refuses, or cannot be dialled). It counts from the
	// first time the request could not be served: the time a holder spent
	// on it before refusing it (a send queued on a busy device) is not
	// time lost to the handoff. Default 5 s.
	RetryFor time.Duration
	// AnswerWait bounds how long a holder may take to start answering a
	// forwarded request (a paused or wedged holder accepts the connection
	// and never answers). Longer than any operation's own bound (a login
	// waits up to 30 s for WhatsApp). Default 60 s.
	AnswerWait time.Duration
	// Now is the clock of the signatures; nil: time.Now.
	Now func() time.Time
	// LoggedIn, when set, lists the devices logged in on any replica, for
	// a send without X-Device-Id: allowed when exactly one is, wherever it
	// runs.
	LoggedIn func(ctx context.Context) ([]string, error)
}

// ForwardedHeader marks a request one replica forwards to another:
// "v1 <replica> <unix seconds> <client IP> <signature>", the signature an
// HMAC-SHA256 under Forwarding.Key of the rest and of the request's
// method, URI and request id. A replica that receives a request so marked
// never forwards it again: it serves it if it holds the device, and
// answers 503 with Retry-After if not. A header that does not verify is
// dropped, and the request is an ordinary one: the header grants nothing
// but that, and credentials are checked as for any request.
const ForwardedHeader = "X-Gowa-Forwarded"

// notHolderHeader marks a replica's 503 for a forwarded request whose
// device it does not hold, so that the forwarding replica routes again
// instead of passing the refusal on. It never reaches a caller.
const notHolderHeader = "X-Gowa-Not-Holder"

// signatureWindow bounds the age of a forwarded request's signature, and
// the clock difference tolerated between replicas.
const signatureWindow = 2 * time.Minute

// forwarder is Forwarding at work.
type forwarder struct {
	Forwarding
	log *slog.Logger
	// fresh carries the requests that must not be repeated (everything
	// but GET and HEAD) on a new connection each: a pooled keep-alive
	// connection that the holder closes as the request goes out (a
	// shutdown closes idle connections) fails it with no way to tell
	// whether the holder acted on it, while a connection that cannot be
	// dialled is certain to have carried nothing.
	fresh http.RoundTripper
}

func newForwarder(f *Forwarding, log *slog.Logger) *forwarder {
	if f == nil {
		return nil
	}
	fw := &forwarder{Forwarding: *f, log: log}
	if fw.Transport == nil {
		fw.Transport = &http.Transport{
			Proxy:               nil, // replicas talk directly
			DialContext:         (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
		}
	}
	if fw.AnswerWait <= 0 {
		fw.AnswerWait = time.Minute
	}
	fw.fresh = fw.Transport
	if t, ok := fw.Transport.(*http.Transport); ok {
		t = t.Clone()
		if t.ResponseHeaderTimeout == 0 {
			t.ResponseHeaderTimeout = fw.AnswerWait
		}
		fw.Transport = t
		fresh := t.Clone()
		fresh.DisableKeepAlives = true
		fw.fresh = fresh
	}
	if fw.RetryFor <= 0 {
		fw.RetryFor = 5 * time.Second
	}
	if fw.Now == nil {
		fw.Now = time.Now
	}
	return fw
}

// inbound takes the internal header off a request: a request that carries
// it is never forwarded again (so that two replicas that disagree can never
// pass a request back and forth), and when the header verifies, its client
// is the one the first replica saw. Nothing after this sees the header. It
// belongs before the throttle and the credentials check, so that those see
// the caller's address.
func (f *forwarder) inbound(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header.Get(ForwardedHeader)
		if v == "" {
			next.ServeHTTP(w, r)
			return
		}
		r.Header.Del(ForwardedHeader)
		from, ip, ok := f.verify(r, v)
		if ok {
			middleware.NoteForwardedFrom(r.Context(), from, ip)
		} else {
			f.log.Warn("a forwarding mark that does not verify: the request is served here or refused, never forwarded", "request_id", middleware.RequestIDFrom(r.Context()), "client_ip", middleware.ClientIPFrom(r.Context()))
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardedKey{}, ok)))
	})
}

type forwardedKey struct{}

// Forwarded tells whether the request whose context is ctx was forwarded
// here by another replica (its mark verified), for a Router that routes
// such a request differently: it is never forwarded again.
func Forwarded(ctx context.Context) bool {
	_, verified := forwardedIn(ctx)
	return verified
}

// forwardedIn tells whether the request carried the internal header, and
// whether it verified.
func forwardedIn(ctx context.Context) (marked, verified bool) {
	v, ok := ctx.Value(forwardedKey{}).(bool)
	return ok, v
}

// route serves the device-scoped operations (as an operation middleware,
// once the route and its path parameters are known): locally when this
// replica serves the device, else by forwarding to its holder.
func (f *forwarder) route(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := scopedDevice(r)
		if id == "" && f.LoggedIn != nil && isSend(r) {
			if marked, _ := forwardedIn(r.Context()); !marked {
				var ok bool
				if id, ok = f.soleDevice(w, r); !ok {
					return
				}
				// For the holder; a local handler finds the same device
				// itself, as the only one logged in here.
				r.Header.Set("X-Device-Id", id)
			}
		}
		if id == "" || domain.ValidateDeviceID(id) != nil {
			// Not device-scoped, or a malformed id the handler refuses.
			next.ServeHTTP(w, r)
			return
		}
		if marked, _ := forwardedIn(r.Context()); marked {
			f.serveForwarded(w, r, next, id)
			return
		}
		f.forward(w, r, next, id)
	})
}

// scopedDevice is the device a device-scoped request names: the
// {device_id} of /devices/{device_id}/…, or X-Device-Id on /send/….
func scopedDevice(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return ""
	}
	p := rctx.RoutePattern()
	switch {
	case strings.HasPrefix(p, "/devices/{device_id}"):
		return rctx.URLParam("device_id")
	case strings.HasPrefix(p, "/send/"):
		return r.Header.Get("X-Device-Id")
	}
	return ""
}

// serveLocal serves r here. When the device turned out to be leaving this
// replica (the answer is marked: nothing was done) and the call may be
// routed again (retry), the answer is held back and it returns false;
// otherwise the answer goes to w and it returns true.
func (f *forwarder) serveLocal(w http.ResponseWriter, r *http.Request, next http.Handler, body []byte, retry bool) bool {
	if !retry {
		next.ServeHTTP(w, r)
		w.Header().Del(notHolderHeader)
		return true
	}
	held := &heldAnswer{header: http.Header{}}
	next.ServeHTTP(held, r)
	if held.status == http.StatusServiceUnavailable && held.header.Get(notHolderHeader) != "" {
		r.Body = io.NopCloser(bytes.NewReader(body))
		return false
	}
	held.header.Del(notHolderHeader)
	h := w.Header()
	for k, vs := range held.header {
		h[k] = vs
	}
	w.WriteHeader(cmp.Or(held.status, http.StatusOK))
	_, _ = w.Write(held.body.Bytes())
	return true
}

// heldAnswer keeps an answer instead of sending it.
type heldAnswer struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (a *heldAnswer) Header() http.Header { return a.header }

func (a *heldAnswer) WriteHeader(status int) {
	if a.status == 0 {
		a.status = status
	}
}

func (a *heldAnswer) Write(b []byte) (int, error) {
	if a.status == 0 {
		a.status = http.StatusOK
	}
	return a.body.Write(b)
}

// isSend tells whether r is a send (/send/…).
func isSend(r *http.Request) bool {
	return strings.HasPrefix(chi.RouteContext(r.Context()).RoutePattern(), "/send/")
}

// soleDevice names the one device logged in on any replica, for a send
// that names none: "" when none is (the local handler says so). When
// several are, or the list cannot be read, it answers and returns false.
func (f *forwarder) soleDevice(w http.ResponseWriter, r *http.Request) (string, bool) {
	ids, err := f.LoggedIn(r.Context())
	switch {
	case err != nil:
		f.unavailable(w, r, "", Route{}, err)
		return "", false
	case len(ids) > 1:
		envelope.Error(w, http.StatusBadRequest, "several devices are logged in; name one in the X-Device-Id header")
		return "", false
	case len(ids) == 1:
		return ids[0], true
	}
	return "", true
}

// isRead tells whether r only reads what the shared store holds (a
// device's status, its webhook), so that any replica can answer it when
// the holder cannot.
func isRead(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	switch chi.RouteContext(r.Context()).RoutePattern() {
	case "/devices/{device_id}", "/devices/{device_id}/status", "/devices/{device_id}/webhook":
		return true
	}
	return false
}

// serveForwarded serves a request another replica forwarded here: locally
// if this replica serves the device, else 503 (never a second hop).
func (f *forwarder) serveForwarded(w http.ResponseWriter, r *http.Request, next http.Handler, id string) {
	rt, err := f.Router.Route(r.Context(), id)
	if err == nil && rt.Local {
		next.ServeHTTP(w, r)
		return
	}
	if _, verified := forwardedIn(r.Context()); verified {
		w.Header().Set(notHolderHeader, "1")
	}
	f.unavailable(w, r, id, rt, err)
}

// forward serves a request that arrived here first: locally, or by handing
// it to the device's holder. While the device changes hands (the holder
// refuses, or cannot be dialled: it is stopping, or died and its lease has
// not lapsed) it routes again, for up to RetryFor from the first time it
// could not be served; the body is kept for that (it is bounded by
// MaxBody).
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, next http.Handler, id string) {
	var body []byte
	if r.Body != nil && r.Body != http.NoBody {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			// Too large, too slow, or the caller went away: the local
			// handler meets the same error and answers it as always.
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(b), errReader{err}))
			next.ServeHTTP(w, r)
			return
		}
		body = b
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	ctx := r.Context()
	read := isRead(r)
	// deadline is set when the request first cannot be served.
	var deadline time.Time
	wait := 50 * time.Millisecond
	for {
		rt, err := f.Router.Route(ctx, id)
		switch {
		case err == nil && rt.Local:
			if f.serveLocal(w, r, next, body, deadline.IsZero() || f.Now().Before(deadline)) {
				return
			}
			// The device left this replica during the call, which was
			// not carried out: route it again.
			err = errNotHolder
		case read && (err != nil || rt.URL == ""):
			// Nobody serves the device now, or the database cannot say
			// who: a read is answered from the shared store.
			next.ServeHTTP(w, r)
			return
		case err == nil && rt.URL != "":
			resp, retry, ferr := f.send(r, body, rt)
			if ferr == nil {
				middleware.NoteForwardedTo(ctx, rt.Holder)
				copyResponse(w, resp)
				return
			}
			if retry && read {
				// The holder is going or gone: the shared store answers
				// at once, rather than after a wait.
				next.ServeHTTP(w, r)
				return
			}
			if !retry {
				middleware.NoteForwardedTo(ctx, rt.Holder)
				f.log.Warn("the replica holding the device failed during a forwarded request", "device_id", id, "replica", rt.Holder, "request_id", middleware.RequestIDFrom(ctx), "err", ferr)
				w.Header().Set("Retry-After", retryAfter(rt.RetryAfter))
				envelope.Error(w, http.StatusServiceUnavailable, "the replica holding device "+id+" stopped answering; the request may not have been carried out")
				return
			}
			err = ferr
		}
		if deadline.IsZero() {
			deadline = f.Now().Add(f.RetryFor)
		}
		if ctx.Err() != nil || !f.Now().Add(wait).Before(deadline) {
			f.unavailable(w, r, id, rt, err)
			return
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.unavailable(w, r, id, rt, ctx.Err())
			return
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// send forwards r (with body) to the holder rt names. retry is true when
// the holder certainly did not carry it out: it could not be dialled, or
// it answered that it does not hold the device.
func (f *forwarder) send(r *http.Request, body []byte, rt Route) (resp *http.Response, retry bool, err error) {
	target, err := url.Parse(rt.URL)
	if err != nil {
		return nil, false, err
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.URL.Scheme = target.Scheme
	out.URL.Host = target.Host
	out.URL.Path = strings.TrimSuffix(target.Path, "/") + r.URL.Path
	if r.URL.RawPath != "" {
		out.URL.RawPath = strings.TrimSuffix(target.EscapedPath(), "/") + r.URL.RawPath
	}
	// The caller's Host: every replica has the same --allowed-hosts, so
	// the holder accepts what this one did, and Origin checks agree.
	out.Host = r.Host
	out.Body = http.NoBody
	out.ContentLength = int64(len(body))
	if len(body) > 0 {
		out.Body = io.NopCloser(bytes.NewReader(body))
		out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	}
	removeHopHeaders(out.Header)
	// The id this replica answers under (the caller's, when well formed):
	// the holder keeps it, so both access logs share it.
	reqID := middleware.RequestIDFrom(r.Context())
	out.Header.Set(middleware.RequestIDHeader, reqID)
	out.Header.Set(ForwardedHeader, f.sign(r.Method, r.URL.RequestURI(), reqID, middleware.ClientIPFrom(r.Context())))
	carrier := f.Transport
	if out.Method != http.MethodGet && out.Method != http.MethodHead {
		carrier = f.fresh
	}
	resp, err = carrier.RoundTrip(out)
	if err != nil {
		return nil, isDialError(err), err
	}
	if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get(notHolderHeader) != "" {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, true, errNotHolder
	}
	return resp, false, nil
}

var errNotHolder = errors.New("the replica no longer holds the device")

// isDialError tells whether err happened before the request left: the
// holder could not be reached at all.
func isDialError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// copyResponse writes the holder's answer as this replica's.
func copyResponse(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	removeHopHeaders(resp.Header)
	resp.Header.Del(notHolderHeader)
	h := w.Header()
	for k, vs := range resp.Header {
		h[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// hopHeaders are the headers of one connection, not of the request
// (RFC 9110, 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

func removeHopHeaders(h http.Header) {
	for _, f := range h.Values("Connection") {
		for name := range strings.SplitSeq(f, ",") {
			if name = strings.TrimSpace(name); name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
}

// unavailable answers 503 with Retry-After for a device that cannot be
// served now.
func (f *forwarder) unavailable(w http.ResponseWriter, r *http.Request, id string, rt Route, err error) {
	msg := "device " + id + " is changing replicas; retry shortly"
	switch {
	case err != nil && errors.Is(err, context.Canceled):
		msg = "the request was cancelled while device " + id + " changed replicas"
	case err != nil && domain.ErrorCode(err) != domain.EINTERNAL:
		// The router's own word: moving, draining, database unreachable.
		msg = domain.ErrorMessage(err)
	case err != nil && !errors.Is(err, errNotHolder) && !isDialError(err):
		f.log.Warn("cannot route a device's request", "device_id", id, "request_id", middleware.RequestIDFrom(r.Context()), "err", err)
		msg = "the shared database cannot be reached to find device " + id + "'s replica"
	case rt.URL != "":
		msg = "the replica holding device " + id + " does not answer; its devices move to the others when its lease lapses"
	}
	if rt.RetryAfter <= 0 {
		rt.RetryAfter = time.Second
	}
	w.Header().Set("Retry-After", retryAfter(rt.RetryAfter))
	envelope.Error(w, http.StatusServiceUnavailable, msg)
}

// retryAfter is d in whole seconds, rounded up, at least 1.
func retryAfter(d time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}

// sign makes the ForwardedHeader value for a request (method, URI as the
// holder will route it, request id) sent on behalf of clientIP.
func (f *forwarder) sign(method, uri, reqID, clientIP string) string {
	ts := strconv.FormatInt(f.Now().Unix(), 10)
	if clientIP == "" {
		clientIP = "-"
	}
	return "v1 " + f.Self + " " + ts + " " + clientIP + " " + f.mac(f.Self, ts, clientIP, method, uri, reqID)
}

// verify checks a ForwardedHeader value against r, and returns the
// replica that sent it and the client it sent it for.
func (f *forwarder) verify(r *http.Request, v string) (from, clientIP string, ok bool) {
	parts := strings.Split(v, " ")
	if len(parts) != 5 || parts[0] != "v1" {
		return "", "", false
	}
	from, ts, clientIP, sig := parts[1], parts[2], parts[3], parts[4]
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", "", false
	}
	if age := f.Now().Sub(time.Unix(secs, 0)); age > signatureWindow || age < -signatureWindow {
		return "", "", false
	}
	want := f.mac(from, ts, clientIP, r.Method, r.URL.RequestURI(), r.Header.Get(middleware.RequestIDHeader))
	if !hmac.Equal([]byte(sig), []byte(want)) {
		return "", "", false
	}
	if clientIP == "-" {
		clientIP = ""
	}
	return from, clientIP, true
}

// mac signs what a forwarded request cannot change without notice: who
// sent it when, for whom, and the request itself (method, URI, id).
func (f *forwarder) mac(from, ts, clientIP, method, uri, reqID string) string {
	m := hmac.New(sha256.New, f.Key)
	for _, s := range []string{"gowa-forward-v1", from, ts, clientIP, method, uri, reqID} {
		m.Write([]byte(s))
		m.Write([]byte{0})
	}
	return hex.EncodeToString(m.Sum(nil))
}

// errReader fails every read with err.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
