// Package httpapi is the HTTP adapter: chi handlers implementing the strict
// server interface generated from openapi.yaml, and the middleware stack
// around them. Handlers translate generated types to domain calls; every
// error is answered in the envelope by writeError.
package httpapi

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Config is what the HTTP adapter serves and how it guards it.
type Config struct {
	Devices Devices
	Sandbox ports.Sandbox // nil outside `whatsapp sandbox`: the sandbox API answers 404
	QR      ports.QRRenderer
	Clock   ports.Clock
	Logger  *slog.Logger

	// Ready tells the readiness probe whether to take traffic.
	Ready func() bool

	Auth     *middleware.Auth           // nil: no authentication
	Proxies  *middleware.TrustedProxies // nil: trust no proxy
	Throttle *middleware.Throttle       // nil: no throttling of failed logins
	Metrics  *middleware.Metrics        // nil: /metrics answers 404
	Events   Events                     // nil: /events and webhooks answer 404
	// Heartbeat is how often an idle event stream gets a comment, so that
	// proxies and clients see it alive. Default 15 s.
	Heartbeat time.Duration
	MaxBody   int64 // 0: 1 MiB
}

// Realm is the Basic auth realm.
const Realm = "gowa"

// NewHandler returns the gateway's HTTP handler.
func NewHandler(cfg Config) http.Handler {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = timeNow{}
	}
	if cfg.Ready == nil {
		cfg.Ready = func() bool { return true }
	}
	srv := &server{
		devices: cfg.Devices,
		sandbox: cfg.Sandbox,
		qr:      cfg.QR,
		clock:   cfg.Clock,
		ready:   cfg.Ready,
		metrics: cfg.Metrics,
		events:  cfg.Events,
		log:     cfg.Logger,
	}
	srv.heartbeat = cfg.Heartbeat
	if srv.heartbeat <= 0 {
		srv.heartbeat = 15 * time.Second
	}
	log := cfg.Logger

	r := chi.NewRouter()
	r.Use(middleware.RequestID())
	r.Use(middleware.ClientIP(cfg.Proxies))
	r.Use(middleware.AccessLog(log))
	if cfg.Metrics != nil {
		r.Use(cfg.Metrics.Middleware)
	}
	r.Use(middleware.Recoverer(log))
	r.Use(middleware.MaxBody(cfg.MaxBody))
	if cfg.Throttle != nil {
		r.Use(public(cfg.Throttle.Middleware))
	}
	if cfg.Auth != nil {
		var onFail func(*http.Request)
		if cfg.Throttle != nil {
			onFail = func(r *http.Request) { cfg.Throttle.Fail(middleware.ClientIPFrom(r.Context())) }
		}
		r.Use(public(cfg.Auth.Middleware(Realm, onFail)))
	}
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		envelope.Error(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		envelope.Error(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on "+r.URL.Path)
	})

	strict := api.NewStrictHandlerWithOptions(srv, []api.StrictMiddlewareFunc{withRequest}, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			badRequest(w, err)
		},
		ResponseErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(log, w, r, err)
		},
	})
	return api.HandlerWithOptions(strict, api.ChiServerOptions{
		BaseRouter: r,
		ErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			badRequest(w, err)
		},
	})
}

// publicPaths are the health probes, which answer without credentials so
// that orchestrators can probe them.
var publicPaths = map[string]bool{"/health": true, "/readyz": true}

// public applies mw to every path but the health probes.
func public(mw func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		guarded := mw(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if publicPaths[r.URL.Path] {
				next.ServeHTTP(w, r)
				return
			}
			guarded.ServeHTTP(w, r)
		})
	}
}

// server implements api.StrictServerInterface.
type server struct {
	devices Devices
	sandbox ports.Sandbox
	qr      ports.QRRenderer
	clock   ports.Clock
	ready   func() bool
	metrics *middleware.Metrics
	events  Events
	log     *slog.Logger

	heartbeat time.Duration
	frames    frameCache
}

var _ api.StrictServerInterface = (*server)(nil)

func (s *server) GetHealth(context.Context, api.GetHealthRequestObject) (api.GetHealthResponseObject, error) {
	return api.GetHealth200JSONResponse{Code: 200, Message: ok, Data: api.Health{Status: "ok"}}, nil
}

func (s *server) GetReady(context.Context, api.GetReadyRequestObject) (api.GetReadyResponseObject, error) {
	if !s.ready() {
		return api.GetReady503JSONResponse{ErrorJSONResponse: api.ErrorJSONResponse{
			Code: http.StatusServiceUnavailable, Message: "not ready",
		}}, nil
	}
	return api.GetReady200JSONResponse{Code: 200, Message: ok, Data: api.Health{Status: "ready"}}, nil
}

func (s *server) GetOpenAPI(context.Context, api.GetOpenAPIRequestObject) (api.GetOpenAPIResponseObject, error) {
	return api.GetOpenAPI200ApplicationYamlResponse{Body: bytes.NewReader(api.Spec), ContentLength: int64(len(api.Spec))}, nil
}

func (s *server) GetMetrics(ctx context.Context, _ api.GetMetricsRequestObject) (api.GetMetricsResponseObject, error) {
	if s.metrics == nil {
		return nil, errNoMetrics
	}
	return metricsResponse{s.metrics.Handler()}, nil
}

// metricsResponse serves the Prometheus handler as a strict response.
type metricsResponse struct{ h http.Handler }

func (m metricsResponse) VisitGetMetricsResponse(w http.ResponseWriter) error {
	req, err := http.NewRequest(http.MethodGet, "/metrics", nil)
	if err != nil {
		return err
	}
	m.h.ServeHTTP(w, req)
	return nil
}

var errNoMetrics = domain.Errorf(domain.ENOTFOUND, "metrics are not enabled")

// timeNow is the default clock.
type timeNow struct{}

func (timeNow) Now() time.Time { return time.Now() }
