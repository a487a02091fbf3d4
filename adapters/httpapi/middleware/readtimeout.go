package middleware

import (
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// maxDrain is how much of a body its handler left unread is read away so
// that the connection can serve the next request: net/http's own bound.
// Past it, net/http closes the connection instead.
const maxDrain = 256 << 10

// ReadTimeout bounds how long a request's body may take to arrive: from
// the moment the handler starts, the body must be read within d, or reads
// fail with a timeout (os.ErrDeadlineExceeded) and the connection is
// closed after the answer. Requests without a body are not touched.
//
// The bound is a read deadline on the connection (http.ResponseController),
// set per request rather than as http.Server.ReadTimeout, and cleared once
// the body has been read to its end: a handler that streams its answer for
// a long time afterwards is not cut off.
//
// net/http reads away a body the handler did not read before it sends the
// answer, with no bound of its own, so a client that announces a body and
// never sends it would hold its connection (and the answer, and a graceful
// shutdown) forever. ReadTimeout does that draining itself, within the
// deadline, before it returns, so that the access log outside it records
// the request only once its answer can go out. A body that does not arrive
// in time is closed, which makes net/http close the connection after the
// answer instead of reading on.
//
// Place it inside AccessLog and outside everything that may answer without
// reading the body (Auth, Throttle, the routes).
func ReadTimeout(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		if d <= 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
				next.ServeHTTP(w, r)
				return
			}
			rc := http.NewResponseController(w)
			if err := rc.SetReadDeadline(time.Now().Add(d)); err != nil {
				// Not a real connection (a test's recorder): nothing to bound.
				next.ServeHTTP(w, r)
				return
			}
			body := &deadlineBody{ReadCloser: r.Body, rc: rc}
			r.Body = body
			next.ServeHTTP(w, r)
			if !body.drain() {
				if rec, ok := w.(*recorder); ok {
					rec.hungUp = true
				}
			}
		})
	}
}

// deadlineBody is a request body read under a deadline: at its end it
// lifts the deadline, and it remembers whether the end was reached.
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	eof    bool
	failed bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		if !b.eof {
			b.eof = true
			_ = b.rc.SetReadDeadline(time.Time{})
		}
	case err != nil:
		b.failed = true
		if errors.Is(err, os.ErrDeadlineExceeded) {
			err = &bodyTimeoutError{err}
		}
	}
	return n, err
}

// bodyTimeoutError marks a body read cut by ReadTimeout, so that it is
// never mistaken for another timeout (one of WhatsApp's, say) on its way up.
type bodyTimeoutError struct{ err error }

func (e *bodyTimeoutError) Error() string { return "request body not received in time" }
func (e *bodyTimeoutError) Unwrap() error { return e.err }

// drain reads away what the handler left of the body, up to maxDrain,
// under the deadline. A body that failed or does not end in time is
// closed: net/http then closes the connection after the answer rather
// than reading on. drain reports false when the caller has gone (the
// connection ended rather than timed out), so the answer will never
// arrive.
func (b *deadlineBody) drain() (callerThere bool) {
	if b.eof {
		return true
	}
	var err error
	if !b.failed {
		_, err = io.CopyN(io.Discard, b, maxDrain+1)
		if b.eof || err == nil {
			// Read to the end, or more than maxDrain is left, which
			// net/http refuses to read and closes the connection for.
			return true
		}
	}
	_ = b.ReadCloser.Close()
	return err == nil || IsReadTimeout(err)
}

// IsReadTimeout tells whether err comes from a body that did not arrive
// within ReadTimeout's bound.
func IsReadTimeout(err error) bool {
	var bt *bodyTimeoutError
	return errors.As(err, &bt)
}
