package middleware

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
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
	var prefix [6]byte
	_, _ = rand.Read(prefix[:])
	base := hex.EncodeToString(prefix[:]) + "-"
	var n atomic.Uint64
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get(RequestIDHeader)
			if id == "" || !callerID.MatchString(id) {
				var buf [40]byte
				id = string(strconv.AppendUint(append(buf[:0], base...), n.Add(1), 10))
			}
			w.Header()[RequestIDHeader] = []string{id}
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), infoKey, &requestInfo{id: id})))
		})
	}
}

// RequestIDFrom returns the id RequestID gave the request, or "" when it
// did not run.
func RequestIDFrom(ctx context.Context) string {
	if info := infoFrom(ctx); info != nil {
		return info.id
	}
	return ""
}
