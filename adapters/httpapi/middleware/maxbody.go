package middleware

import (
	"net/http"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// DefaultMaxBody is the body limit MaxBody applies when given 0: 1 MiB.
const DefaultMaxBody = 1 << 20

// MaxBody limits request bodies to n bytes (DefaultMaxBody when n <= 0). A
// request whose Content-Length exceeds n is answered 413 in the envelope
// at once; any other body is cut off by http.MaxBytesReader, whose
// *http.MaxBytesError the handler's decoding error must map to 413.
func MaxBody(n int64) func(http.Handler) http.Handler {
	if n <= 0 {
		n = DefaultMaxBody
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > n {
				envelope.Error(w, http.StatusRequestEntityTooLarge, "request body too large")
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, n)
			}
			next.ServeHTTP(w, r)
		})
	}
}
