package middleware

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gowa-dev/gowa/domain"
)

// unmatchedRoute labels requests no route matches (404s, 405s), so that
// arbitrary paths cannot mint series.
const unmatchedRoute = "unmatched"

// deviceStates are reported even when no device is in them, so that a
// state's gauge drops to 0 instead of vanishing.
var deviceStates = []domain.State{
	domain.StateDisconnected,
	domain.StatePairing,
	domain.StateConnecting,
	domain.StateConnected,
	domain.StateLoggedOut,
}

// Metrics is the gateway's Prometheus instrumentation, on a registry of
// its own rather than the global one, so that two gateways in one process
// (as in tests) do not collide:
//
//   - gowa_devices{state}: devices by state, counted at scrape time;
//   - gowa_logins_total{method,outcome}: finished logins, via LoginObserved;
//   - gowa_http_requests_total{route,method,status} and
//     gowa_http_request_duration_seconds{route,method}: via Middleware;
//   - the Go runtime and process collectors.
type Metrics struct {
	reg      *prometheus.Registry
	logins   *prometheus.CounterVec
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec

	events, deliveries *prometheus.CounterVec // set by WatchEvents

	// series caches the counter and histogram of each (route, method,
	// status), so that a request costs a map load rather than hashing its
	// labels and formatting its status. Routes, methods and statuses are
	// bounded sets, so it stays small.
	series sync.Map // seriesKey → *RequestSeries
}

type seriesKey struct {
	route, method string
	status        int
}

// RequestSeries is the request counter and duration histogram of one
// (route, method, status).
type RequestSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// Observe counts one request that took d.
func (s *RequestSeries) Observe(d time.Duration) {
	s.count.Inc()
	s.duration.Observe(d.Seconds())
}

// Series returns the series requests of route ("" for none matched),
// method and status are counted in, as Middleware counts them: for a
// handler that answers requests outside Middleware (the fast status
// route), which may keep it rather than look it up per request.
func (m *Metrics) Series(route, method string, status int) *RequestSeries {
	if route == "" {
		route = unmatchedRoute
	}
	return m.seriesFor(route, normalMethod(method), status)
}

// seriesFor returns the cached series of a request.
func (m *Metrics) seriesFor(route, method string, status int) *RequestSeries {
	k := seriesKey{route, method, status}
	if s, ok := m.series.Load(k); ok {
		return s.(*RequestSeries)
	}
	s := &RequestSeries{
		count:    m.requests.WithLabelValues(route, method, strconv.Itoa(status)),
		duration: m.duration.WithLabelValues(route, method),
	}
	actual, _ := m.series.LoadOrStore(k, s)
	return actual.(*RequestSeries)
}

// NewMetrics returns the metrics, with devicesByState (which may be nil)
// called on every scrape for the device gauge. It may be called before the
// devices exist, as long as it is not scraped before.
func NewMetrics(devicesByState func() map[string]int) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gowa_logins_total",
			Help: "Finished device logins by pairing method (qr, code) and outcome (success, failure, expired).",
		}, []string{"method", "outcome"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gowa_http_requests_total",
			Help: "HTTP requests by route pattern, method and status.",
		}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gowa_http_request_duration_seconds",
			Help:    "HTTP request duration by route pattern and method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"route", "method"}),
	}
	m.reg.MustRegister(
		m.logins, m.requests, m.duration,
		devicesCollector{
			desc:  prometheus.NewDesc("gowa_devices", "Devices by state.", []string{"state"}, nil),
			count: devicesByState,
		},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// LoginObserved counts one finished login.
func (m *Metrics) LoginObserved(method, outcome string) {
	m.logins.WithLabelValues(method, outcome).Inc()
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Middleware counts and times requests by chi route pattern, never by raw
// path, so the number of series stays bounded. Place it outside Recoverer,
// so that a request whose handler panicked is counted with its 500.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := record(w)
		next.ServeHTTP(rec, r)
		route, _ := rec.routeFor(r)
		m.Series(route, r.Method, rec.finalStatus()).Observe(time.Since(start))
	})
}

// normalMethod keeps made-up methods from minting series.
func normalMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "OTHER"
}

// devicesCollector reads the device counts at scrape time.
type devicesCollector struct {
	desc  *prometheus.Desc
	count func() map[string]int
}

func (c devicesCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c devicesCollector) Collect(ch chan<- prometheus.Metric) {
	var counts map[string]int
	if c.count != nil {
		counts = c.count()
	}
	for _, s := range deviceStates {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[string(s)]), string(s))
	}
	for s, n := range counts {
		if !isKnownState(s) {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), s)
		}
	}
}

func isKnownState(s string) bool {
	for _, k := range deviceStates {
		if string(k) == s {
			return true
		}
	}
	return false
}
