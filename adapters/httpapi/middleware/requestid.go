package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
)

// RequestIDHeader carries a request's id, both ways.
const RequestIDHeader = "X-Request-Id"

// RequestID gives every request an id: the caller's X-Request-Id when it
// is well formed (so a proxy's id follows the request through), else a new
// one. The id is answered in X-Request-Id, logged by AccessLog and read
// with RequestIDFrom.
func RequestID() func(http.Handler) http.Handler {
	ids := NewRequestIDs()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := ids.assign(w, r)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey, info)))
		})
	}
}

// RequestIDs makes request ids: a random prefix per process and a
// counter. One RequestIDs serves a whole handler, so that ids do not
// repeat within a process's run.
type RequestIDs struct {
	base string
	n    atomic.Uint64
}

// NewRequestIDs returns a source of ids with a fresh random prefix.
func NewRequestIDs() *RequestIDs {
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	return &RequestIDs{base: hex.EncodeToString(prefix[:]) + "-"}
}

// Assign gives r its id (the caller's, when well formed, else a new one),
// answers it in X-Request-Id, and returns what the edge knows of the
// request: the id and the client's ip and scheme (from ResolveClient).
// RequestContext does this for every request it serves; a handler serving
// requests outside it (the fast status route) calls it itself.
func (s *RequestIDs) Assign(w http.ResponseWriter, r *http.Request, ip, scheme string) *RequestInfo {
	info := s.assign(w, r)
	info.ip, info.scheme, info.resolved = ip, scheme, true
	return info
}

// assign gives r its id, answers it in X-Request-Id and returns the
// request's info holding it.
func (s *RequestIDs) assign(w http.ResponseWriter, r *http.Request) *RequestInfo {
	id := r.Header.Get(RequestIDHeader)
	if !wellFormedID(id) {
		var buf [40]byte
		id = string(strconv.AppendUint(append(buf[:0], s.base...), s.n.Add(1), 10))
	}
	info := &RequestInfo{id: id}
	info.header[0] = id
	w.Header()[RequestIDHeader] = info.header[:]
	return info
}

// wellFormedID tells whether a caller's id may be kept: 1 to 128 of
// letters, digits and ._:/+=- (anything else, such as spaces or control
// characters, could forge log lines or headers).
func wellFormedID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '+', c == '=', c == '-':
		default:
			return false
		}
	}
	return true
}

// routeContexts recycles chi routing contexts for RequestContext, as chi
// itself does.
var routeContexts = sync.Pool{New: func() any { return chi.NewRouteContext() }}

// RequestContext serves router with what RequestID and ClientIP would
// give each request, and with chi's routing context, made in one copy of
// the request instead of three: router, a chi router, sees the routing
// context already there and uses it rather than copying the request again
// (chi's rule for a router mounted in another). Use it in place of
// RequestID and ClientIP, around the router whose middleware would have
// started with them; ids come from ids.
func RequestContext(ids *RequestIDs, tp *TrustedProxies, router chi.Router) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ip, scheme := ResolveClient(tp, r)
		info := ids.Assign(w, r, ip, scheme)
		rctx := routeContexts.Get().(*chi.Context)
		rctx.Reset()
		rctx.Routes = router
		ctx := context.WithValue(r.Context(), chi.RouteCtxKey, rctx)
		router.ServeHTTP(w, r.WithContext(context.WithValue(ctx, infoKey, info)))
		routeContexts.Put(rctx)
	})
}

// RequestIDFrom returns the id RequestID gave the request, or "" when it
// did not run.
func RequestIDFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}
