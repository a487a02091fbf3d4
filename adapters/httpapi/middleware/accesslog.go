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
				status := rec.finalStatus()
				route, rctx := rec.routeFor(r)
				attrs := []slog.Attr{
					slog.String("method", r.Method),
					slog.String("path", r.URL.Path),
					slog.String("route", route),
					slog.Int("status", status),
					slog.Float64("duration_ms", float64(time.Since(start).Microseconds())/1000),
					slog.Int64("bytes", rec.bytes),
					slog.String("client_ip", ClientIPFrom(r.Context())),
					slog.String("request_id", chimw.GetReqID(r.Context())),
				}
				if id := deviceID(r, rctx); id != "" {
					attrs = append(attrs, slog.String("device_id", id))
				}
				logger.LogAttrs(r.Context(), slog.LevelInfo, "http request", attrs...)
			}()
			next.ServeHTTP(rec, r)
		})
	}
}

// routeOf is the chi route for r, such as "/devices/{device_id}", or ""
// when none matches, with the routing context holding its URL parameters.
// chi fills the request's routing context as it routes, so this is only
// complete after the handler ran. A request answered before routing (a
// 401, a 413, a 429) is looked up in the router without being served, so
// it is still logged and counted under its route.
func routeOf(r *http.Request) (string, *chi.Context) {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return "", nil
	}
	if p := rctx.RoutePattern(); p != "" || rctx.Routes == nil {
		return p, rctx
	}
	path := rctx.RoutePath
	if path == "" {
		path = r.URL.RawPath
	}
	if path == "" {
		path = r.URL.Path
	}
	probe := chi.NewRouteContext()
	return rctx.Routes.Find(probe, r.Method, path), probe
}

// deviceID is the device a request names: the {device_id} path parameter,
// or else the X-Device-Id header.
func deviceID(r *http.Request, rctx *chi.Context) string {
	if rctx != nil {
		if id := rctx.URLParam("device_id"); id != "" {
			return id
		}
	}
	return r.Header.Get("X-Device-Id")
}
