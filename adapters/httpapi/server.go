// Package httpapi is the HTTP adapter: chi handlers implementing the strict
// server interface generated from openapi.yaml, and the middleware stack
// around them. Handlers translate generated types to domain calls; every
// error is answered in the envelope by writeError.
package httpapi

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/console"
	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Config is what the HTTP adapter serves and how it guards it.
type Config struct {
	Devices Devices
	Sandbox sandbox.Network // nil outside `whatsapp sandbox`: the sandbox API answers 404
	QR      QRRenderer
	Clock   ports.Clock
	Logger  *slog.Logger

	// Ready tells the readiness probe whether to take traffic.
	Ready func() bool

	// AccessLog receives the access log, one JSON line per request in the
	// shape of Logger's records (see middleware.AccessLog); nil discards it.
	AccessLog io.Writer

	Auth     *middleware.Auth           // nil: no authentication
	Proxies  *middleware.TrustedProxies // nil: trust no proxy
	Throttle *middleware.Throttle       // nil: no throttling of failed logins
	Metrics  *middleware.Metrics        // nil: /metrics answers 404
	Sites    *middleware.SiteGuard      // nil: no Host, cross-site or media-type checks
	MaxBody  int64                      // 0: 1 MiB
	Events   Events                     // nil: /events and webhooks answer 404
	// Heartbeat is how often an idle event stream gets a comment, so that
	// proxies and clients see it alive. Default 15 s.
	Heartbeat time.Duration

	// BodyTimeout bounds how long a request body may take to arrive,
	// from the moment its headers were read (0: DefaultBodyTimeout).
	BodyTimeout time.Duration

	// UI serves the browser console at "/" (see package console), behind
	// the same authentication as the API.
	UI bool

	// Listing, when set, answers GET /devices instead of Devices.List:
	// with several replicas, the list comes from the shared store, and
	// reading it can fail.
	Listing Listing

	// Forwarding, when set, makes this the edge of one replica among
	// several: device-scoped requests for a device another replica holds
	// are forwarded to it (see Forwarding). nil: one gateway serves all.
	Forwarding *Forwarding
}

// Connection limits NewServer applies when the Limits fields are 0.
const (
	DefaultHeaderTimeout  = 10 * time.Second
	DefaultBodyTimeout    = 30 * time.Second
	DefaultIdleTimeout    = 2 * time.Minute
	DefaultMaxHeaderBytes = 16 << 10
)

// Limits bound what one connection can hold of the server.
type Limits struct {
	// HeaderTimeout bounds reading a request's headers
	// (http.Server.ReadHeaderTimeout).
	HeaderTimeout time.Duration
	// IdleTimeout closes keep-alive connections idle for this long.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers; past it (and net/http's
	// own 4 KiB of slack) the answer is 431 in the envelope.
	MaxHeaderBytes int
}

// NewServer returns the HTTP server for handler with limits applied (the
// body's own bound is Config.BodyTimeout, applied per request by the
// handler). Serve it on Listener(ln), so that net/http's own refusals come
// in the envelope too.
func NewServer(handler http.Handler, limits Limits, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: orDefault(limits.HeaderTimeout, DefaultHeaderTimeout),
		IdleTimeout:       orDefault(limits.IdleTimeout, DefaultIdleTimeout),
		MaxHeaderBytes:    orDefault(limits.MaxHeaderBytes, DefaultMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
}

func orDefault[T int | time.Duration](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
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
		listing: cfg.Listing,
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

	// Request id and client IP: see RequestContext, around r at the end,
	// and in front of it all the status endpoint's own route (statusRoute).
	r := chi.NewRouter()
	r.Use(middleware.AccessLog(cfg.AccessLog))
	if cfg.Metrics != nil {
		r.Use(cfg.Metrics.Middleware)
	}
	r.Use(middleware.Recoverer(log))
	r.Use(middleware.ReadTimeout(orDefault(cfg.BodyTimeout, DefaultBodyTimeout)))
	fw := newForwarder(cfg.Forwarding, log)
	if fw != nil {
		r.Use(fw.inbound)
	}
	if cfg.Sites != nil {
		r.Use(public(cfg.Sites.Middleware))
	}
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
	r.Use(strictJSON)
	r.NotFound(func(w http.ResponseWriter, r *http.Request) {
		envelope.Error(w, http.StatusNotFound, "no such endpoint: "+middleware.Bound(r.Method)+" "+middleware.Bound(r.URL.Path))
	})
	r.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		envelope.Error(w, http.StatusMethodNotAllowed, "method "+middleware.Bound(r.Method)+" not allowed on "+middleware.Bound(r.URL.Path))
	})

	if cfg.UI {
		ui := console.New(r.NotFoundHandler())
		for _, p := range []string{"/", console.Prefix + "*"} {
			r.Method(http.MethodGet, p, ui)
			r.Method(http.MethodHead, p, ui)
		}
	}

	strict := api.NewStrictHandlerWithOptions(srv, []api.StrictMiddlewareFunc{withRequest}, api.StrictHTTPServerOptions{
		RequestErrorHandlerFunc: badRequest,
		ResponseErrorHandlerFunc: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(log, w, r, err)
		},
	})
	opts := api.ChiServerOptions{
		BaseRouter:       r,
		ErrorHandlerFunc: badRequest,
	}
	if fw != nil {
		// Once the route and its path parameters are known, the auth and
		// the edge's checks done: device-scoped requests go to the holder.
		opts.Middlewares = []api.MiddlewareFunc{fw.route}
	}
	api.HandlerWithOptions(strict, opts)
	ids := middleware.NewRequestIDs()
	stack := middleware.RequestContext(ids, cfg.Proxies, r)
	if fw != nil {
		// Among replicas the status of a device may live elsewhere: the
		// generic stack, which forwards, answers it.
		return stack
	}
	return newStatusRoute(srv, stack, ids, cfg)
}

// isPublic tells whether path is a health probe, which answers without
// credentials so that orchestrators can probe it.
func isPublic(path string) bool { return path == "/health" || path == "/readyz" }

// public applies mw to every path but the health probes.
func public(mw func(http.Handler) http.Handler) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		guarded := mw(next)
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isPublic(r.URL.Path) {
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
	listing Listing
	sandbox sandbox.Network
	qr      QRRenderer
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
		return api.GetReady503JSONResponse{UnavailableJSONResponse: api.UnavailableJSONResponse{
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
