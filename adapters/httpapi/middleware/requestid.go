package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"

	chimw "github.com/go-chi/chi/v5/middleware"
)

// RequestIDHeader carries a request's id, both ways.
const RequestIDHeader = "X-Request-Id"

// callerID is what an id sent by the caller may look like; anything else
// (too long, spaces, control characters) is replaced by one of ours.
var callerID = regexp.MustCompile(`^[A-Za-z0-9._:/+=-]{1,128}$`)

// RequestID gives every request an id: the caller's X-Request-Id when it
// is well formed (so a proxy's id follows the request through), else a new
// one. The id is answered in X-Request-Id, logged by AccessLog and read
// with chi's middleware.GetReqID.
func RequestID() func(http.Handler) http.Handler {
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	base := hex.EncodeToString(prefix[:]) + "-"
	var n atomic.Uint64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get(RequestIDHeader)
			if id == "" || !callerID.MatchString(id) {
				id = base + strconv.FormatUint(n.Add(1), 10)
			}
			w.Header()[RequestIDHeader] = []string{id}
			// chi's key too, for code that reads it with chimw.GetReqID.
			ctx := context.WithValue(r.Context(), chimw.RequestIDKey, id)
			ctx = context.WithValue(ctx, infoKey, &requestInfo{id: id})
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}
