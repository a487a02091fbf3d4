package middleware

import (
	"net/http"

	"github.com/go-chi/chi/v5"
)

// recorder is the ResponseWriter that AccessLog and Metrics share: it
// remembers the status and counts the body bytes. Nested middleware reuse
// the outer recorder rather than wrapping it again.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64

	// hungUp is set when the caller went away before the answer could be
	// sent (see ReadTimeout): the status it would have had was never
	// received, so the request is logged and counted as a 499.
	hungUp bool

	// The request's route, looked up once for both (see routeFor).
	routed bool
	route  string
	rctx   *chi.Context
}

// record returns w as a recorder, reusing w when it already is one.
func record(w http.ResponseWriter) *recorder {
	if rec, ok := w.(*recorder); ok {
		return rec
	}
	return &recorder{ResponseWriter: w}
}

func (r *recorder) WriteHeader(status int) {
	// 1xx answers are informational; the final status comes later.
	if r.status == 0 && status >= 200 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Flush keeps streaming answers streaming through the recorder.
func (r *recorder) Flush() {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer (for
// deadlines, hijacking and the like).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Status is the status sent so far: 200 once a body was written without an
// explicit status, 0 when nothing was sent yet.
func (r *recorder) Status() int { return r.status }

// finalStatus is the status the client got once the handler returned: 200
// when nothing was written, as net/http sends then.
func (r *recorder) finalStatus() int {
	if r.hungUp {
		return StatusClientClosedRequest
	}
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// StatusClientClosedRequest is the status logged and counted for a request
// whose caller hung up before its answer was sent (nginx's 499).
const StatusClientClosedRequest = 499

// routeFor is routeOf(req), computed once per request.
func (r *recorder) routeFor(req *http.Request) (string, *chi.Context) {
	if !r.routed {
		r.route, r.rctx = routeOf(req)
		r.routed = true
	}
	return r.route, r.rctx
}

// wroteHeader tells whether the status line has gone out.
func (r *recorder) wroteHeader() bool { return r.status != 0 }
