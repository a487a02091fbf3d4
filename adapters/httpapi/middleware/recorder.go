package middleware

import (
	"net/http"
)

// recorder is the ResponseWriter that AccessLog and Metrics share: it
// remembers the status and counts the body bytes. Nested middleware reuse
// the outer recorder rather than wrapping it again.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
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

// wroteHeader tells whether the status line has gone out.
func (r *recorder) wroteHeader() bool { return r.status != 0 }
