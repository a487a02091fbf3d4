package middleware

import (
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	chimw "github.com/go-chi/chi/v5/middleware"
)

// AccessLog logs one Info line, "http request", per request when it
// completes: method, path, route (the chi pattern, when one matched),
// status, duration_ms, bytes, client_ip, request_id and, where the request
// names one, device_id. It never logs headers, the query string or bodies,
// since those carry credentials, QR texts, pairing codes and messages.
//
// It belongs outside Recoverer, so that a panic is logged as the 500 the
// client got, and inside ClientIP and chi's RequestID.
func AccessLog(logger *slog.Logger) func(http.Handler) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rec := record(w)
			defer func() {
				// Deferred, so that a request whose handler aborts with a
				// panic is logged too (as the panic unwinds).
				status := rec.Status()
				if status == 0 {
					status = http.StatusOK // nothing written: net/http sends 200
				}
				attrs := []slog.Attr{
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("route", routePattern(r)),
					slog.Int("status", status),
					slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
					slog.Int64("bytes", rec.bytes),
					slog.String("client_ip", ClientIPFrom(r.Context())),
					slog.String("request_id", chimw.GetReqID(r.Context())),
				}
				if id := deviceID(r); id != "" {
					attrs = append(attrs, slog.String("device_id", id))
				}
				logger.LogAttrs(r.Context(), slog.LevelInfo, "http request", attrs...)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// routePattern is the chi route that served r, such as
// "/devices/{device_id}", or "" when none matched. chi fills the route
// context as it routes, so this is only complete after the handler ran.
func routePattern(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return ""
	}
	return rctx.RoutePattern()
}

// deviceID is the device a request names: the {device_id} path parameter,
// or else the X-Device-Id header. Like routePattern, it is known only after
// routing.
func deviceID(r *http.Request) string {
	if rctx := chi.RouteContext(r.Context()); rctx != nil {
		if id := rctx.URLParam("device_id"); id != "" {
			return id
		}
	}
	return r.Header.Get("X-Device-Id")
}
