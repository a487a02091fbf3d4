package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/go-chi/chi/v5"
)

// RequestIDHeader carries a request's id, both ways.
const RequestIDHeader = "X-Request-Id"

// callerID is what an id sent by the caller may look like; anything else
// (too long, spaces, control characters) is replaced by one of ours.
var callerID = regexp.MustCompile(`^[A-Za-z0-9._:/+=-]{1,128}$`)

// RequestID gives every request an id: the caller's X-Request-Id when it
// is well formed (so a proxy's id follows the request through), else a new
// one. The id is answered in X-Request-Id, logged by AccessLog and read
// with RequestIDFrom.
func RequestID() func(http.Handler) http.Handler {
	ids := newIDSource()
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			info := ids.info(w, r)
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey, info)))
		})
	}
}

// idSource makes request ids: a random prefix per process and a counter.
type idSource struct {
	base string
	n    atomic.Uint64
}

func newIDSource() *idSource {
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	return &idSource{base: hex.EncodeToString(prefix[:]) + "-"}
}

// info gives r its id, answers it in X-Request-Id and returns the
// request's info holding it.
func (s *idSource) info(w http.ResponseWriter, r *http.Request) *requestInfo {
	id := r.Header.Get(RequestIDHeader)
	if id == "" || !callerID.MatchString(id) {
		var buf [40]byte
		id = string(strconv.AppendUint(append(buf[:0], s.base...), s.n.Add(1), 10))
	}
	info := &requestInfo{id: id}
	info.header[0] = id
	w.Header()[RequestIDHeader] = info.header[:]
	return info
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
// started with them.
func RequestContext(tp *TrustedProxies, router chi.Router) http.Handler {
	ids := newIDSource()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := ids.info(w, r)
		info.ip, info.scheme = resolveClient(tp, r)
		info.resolved = true
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
