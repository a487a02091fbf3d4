package middleware

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// Recoverer turns a panic in a handler into a 500 envelope ("internal
// error") and an Error log line with the panic value and the stack, so one
// bad request never takes the process down. http.ErrAbortHandler is
// re-panicked: it is net/http's way to abort a response on purpose.
//
// If the handler had already sent its status, the client has a partial
// answer and only the log line is written.
func Recoverer(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			rec := record(w)
			defer func() {
				v := recover()
				if v == nil {
					return
				}
				Recovered(logger, r, v)
				if !rec.wroteHeader() {
					envelope.Error(rec, http.StatusInternalServerError, "internal error")
				}
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// Recovered handles a panic v that a handler of r raised, as Recoverer
// does before it answers 500: it panics again with http.ErrAbortHandler,
// and logs anything else with the stack. For handlers that answer requests
// outside Recoverer (the fast status route).
func Recovered(logger *slog.Logger, r *http.Request, v any) {
	if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
		panic(v)
	}
	logger.LogAttrs(r.Context(), slog.LevelError, "panic in handler",
		slog.String("method", Bound(r.Method)),
		slog.String("path", Bound(r.URL.Path)),
		slog.String("panic", fmt.Sprint(v)),
		slog.String("stack", string(debug.Stack())),
	)
}
