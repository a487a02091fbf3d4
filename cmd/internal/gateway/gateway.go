// Package gateway wires gowa: every adapter, the device service and the
// HTTP server, the one way cmd/whatsapp, cmd/bench and cmd/chaos (through
// the binary) build it.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/adapters/httpapi/qrpng"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
	"github.com/gowa-dev/gowa/domain/events"
)

// Config is what the gateway needs; cmd/whatsapp fills it from its flags
// and environment.
type Config struct {
	Port           int
	Host           string
	Storages       string
	OS             string
	Debug          bool
	BasicAuth      string
	BasicAuthFile  string
	TrustedProxies string
	AllowedHosts   string
	ShutdownGrace  time.Duration
	// Events configures the live events: global webhooks and the event
	// log's retention.
	Events EventsConfig
	// Sandbox wires the simulated WhatsApp network instead of WhatsApp.
	Sandbox bool
	// UI serves the browser console at "/".
	UI bool
	// Tuning shortens lifetimes for tests; zero values keep the defaults.
	Tuning Tuning
	// FlagName names a setting in errors as the user gave it (--basic-auth
	// or APP_BASIC_AUTH); nil names the flag.
	FlagName func(flag string) string
}

// name is how errors name the setting of flag.
func (c Config) name(flag string) string {
	if c.FlagName != nil {
		return c.FlagName(flag)
	}
	return "--" + flag
}

// EventsConfig is the live events' part of the configuration. Zero values
// keep the event service's defaults.
type EventsConfig struct {
	// Webhooks are the global webhooks' URLs, sent every device's events,
	// signed with WebhookSecret (checked by the caller: at least
	// domain.MinWebhookSecret bytes).
	Webhooks      []string
	WebhookSecret string
	// WebhookTimeout bounds one delivery; WebhookRetryMax is the longest
	// wait between two tries of a failing one.
	WebhookTimeout  time.Duration
	WebhookRetryMax time.Duration
	// Retention and MaxEvents bound the event log.
	Retention time.Duration
	MaxEvents int
}

// DefaultOS is the name phones show for linked devices when Config.OS is
// empty.
const DefaultOS = "GOWA"

// Tuning holds the lifetimes and waits that are options so that tests need
// not wait on the wall clock. Zero means the default.
type Tuning struct {
	FirstQR, NextQR time.Duration // QR code lifetimes (60 s, 20 s)
	LoginWait       time.Duration // for WhatsApp's first QR or pairing code (30 s)
	UnlinkWait      time.Duration // for an offline device to come online to unlink (15 s)
	SendWait        time.Duration // for a connecting device before a send fails (10 s)
	// How long "is this number on WhatsApp?" answers are kept: yes (a day),
	// no (a minute).
	OnWhatsAppFor, OffWhatsAppFor time.Duration
	BodyTimeout                   time.Duration // for a request body to arrive (httpapi's default)
	// Wrap, when set, wraps the whole HTTP handler; the end-to-end tests
	// hold every answer to openapi.yaml with it.
	Wrap func(http.Handler) http.Handler
}

// Gateway is the composition root: every adapter, the device service and
// the HTTP server, wired together. Open it, Run it, and it closes itself
// when Run returns.
type Gateway struct {
	*Core
	cfg   Config
	ln    net.Listener
	serve net.Listener // ln as the HTTP server takes it (httpapi.NewListener)
	http  *http.Server
	auth  *middleware.Auth
	ready atomic.Bool
}

// Core is the gateway without its HTTP server: the storage lock, the
// stores, the simulated network in the sandbox, and the device service,
// started.
type Core struct {
	Log      *slog.Logger
	Root     string
	Devices  *device.Service
	Registry *sqlite.Registry
	Events   *events.Hub   // the live events; started before the devices
	Sim      *wasim.Server // nil outside the sandbox
	Metrics  *middleware.Metrics
	lock     *storageLock
	eventDB  *sqlite.Events
}

// NewLogger returns the gateway's JSON logger on out.
func NewLogger(out io.Writer, debug bool) *slog.Logger {
	level := slog.LevelInfo
	if debug {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))
}

// OpenCore takes the storage folder's lock, opens the stores and starts
// the device service (which restores sessions in the background). A second
// gateway on the same folder gets an error naming the folder and the pid of
// the one holding it.
func OpenCore(ctx context.Context, cfg Config, log *slog.Logger) (c *Core, err error) {
	c = &Core{Log: log}
	opened := c
	defer func() {
		if err != nil {
			opened.Close()
		}
	}()
	c.Root, err = filepath.Abs(cfg.Storages)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("storages"), err)
	}
	if err := os.MkdirAll(c.Root, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("storages"), err)
	}
	if c.lock, err = lockStorage(c.Root); err != nil {
		return nil, err
	}
	sessions, err := sqlite.NewSessions(c.Root)
	if err != nil {
		return nil, err
	}
	c.Registry, err = sqlite.OpenRegistry(c.Root)
	if err != nil {
		return nil, err
	}

	cfg.OS = cmp.Or(cfg.OS, DefaultOS)
	waOpts := whatsapp.Options{Locate: sessions.Locate, OS: cfg.OS, Logger: log, Debug: cfg.Debug, FirstCodeLife: cfg.Tuning.FirstQR, CodeLife: cfg.Tuning.NextQR,
		OnWhatsAppFor: cfg.Tuning.OnWhatsAppFor, OffWhatsAppFor: cfg.Tuning.OffWhatsAppFor}
	if cfg.Sandbox {
		c.Sim, err = wasim.New(wasim.Options{Dir: filepath.Join(c.Root, ".wasim"), Logger: log.With("component", "wasim")})
		if err != nil {
			return nil, fmt.Errorf("start the simulated WhatsApp network: %w", err)
		}
		certRoot := wasim.RootPublicKey()
		waOpts.HTTPClient = c.Sim.HTTPClient()
		waOpts.CertRoot = &certRoot
		log.Warn("SANDBOX: devices connect to a simulated WhatsApp network, not to WhatsApp", "storages", c.Root)
	}

	c.Metrics = middleware.NewMetrics(func() map[string]int { return c.Devices.CountByState() })
	// The event service starts before the devices, so that the events of
	// the sessions restored at start-up are logged and sent.
	if c.eventDB, c.Events, err = openEvents(ctx, c.Root, cfg.Events, true, log, c.Metrics); err != nil {
		return nil, err
	}
	c.Devices = device.New(device.Config{
		Events:      c.Events,
		WhatsApp:    whatsapp.New(waOpts),
		Sessions:    sessions,
		Registry:    c.Registry,
		Logger:      log,
		DisplayName: cfg.OS,
		LoginWait:   cfg.Tuning.LoginWait,
		UnlinkWait:  cfg.Tuning.UnlinkWait,
		SendWait:    cfg.Tuning.SendWait,
		OnLogin: func(m domain.PairingMethod, outcome string) {
			c.Metrics.LoginObserved(string(m), outcome)
		},
	})
	if err := c.Devices.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes what OpenCore opened, in reverse order, the lock last.
func (c *Core) Close() {
	if c.Devices != nil {
		_ = c.Devices.Close()
	}
	// After the devices, so that their last events are written.
	if c.Events != nil {
		_ = c.Events.Close()
	}
	if c.eventDB != nil {
		_ = c.eventDB.Close()
	}
	if c.Sim != nil {
		_ = c.Sim.Close()
	}
	if c.Registry != nil {
		_ = c.Registry.Close()
	}
	if c.lock != nil {
		c.lock.release()
	}
}

// Open opens the core and binds the listener. It does not serve until Run.
func Open(ctx context.Context, cfg Config, logOut io.Writer) (g *Gateway, err error) {
	log := NewLogger(logOut, cfg.Debug)
	g = &Gateway{cfg: cfg}
	opened := g // the early returns below set g to nil
	defer func() {
		if err != nil {
			opened.close()
		}
	}()

	creds, err := middleware.ParseCredentials(cfg.BasicAuth)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("basic-auth"), err)
	}
	g.auth, err = middleware.NewAuth(creds, cfg.BasicAuthFile, log)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("basic-auth-file"), err)
	}
	proxies, err := middleware.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("trusted-proxies"), err)
	}
	allowedHosts, err := middleware.ParseAllowedHosts(cfg.AllowedHosts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("allowed-hosts"), err)
	}

	g.Core, err = OpenCore(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	var sb sandbox.Network
	if g.Sim != nil {
		sb = g.Sim
	}

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	g.ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("port"), err)
	}
	handler := httpapi.NewHandler(httpapi.Config{
		Devices:  g.Devices,
		Sandbox:  sb,
		QR:       qrpng.New(),
		Logger:   log,
		Ready:    g.ready.Load,
		Auth:     g.auth,
		Proxies:  proxies,
		Throttle: middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:  g.Metrics,
		Sites:    middleware.NewSiteGuard(allowedHosts, isLoopback(g.ln.Addr())),
		Events:   g.Events,

		AccessLog:   logOut,
		BodyTimeout: cfg.Tuning.BodyTimeout,
		UI:          cfg.UI,
	})
	g.http = httpapi.NewServer(wrap(cfg.Tuning.Wrap, handler), httpapi.Limits{}, log)
	g.serve = httpapi.NewListener(g.ln, httpapi.ListenerConfig{AccessLog: logOut, Metrics: g.Metrics})
	// Event streams never go idle: end them when shutdown begins, so that
	// the grace period is left to requests that finish.
	g.http.RegisterOnShutdown(g.Events.CloseStreams)
	if !g.auth.Enabled() && !isLoopback(g.ln.Addr()) {
		log.Warn("no credentials are configured and the API listens beyond loopback: anyone who can reach it controls the linked WhatsApp accounts; set --basic-auth or APP_BASIC_AUTH")
	}
	return g, nil
}

// Addr is the address the gateway listens on.
func (g *Gateway) Addr() string { return g.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: readiness goes to
// 503, in-flight requests finish (bounded by ShutdownGrace), WhatsApp
// connections close without logging out and the stores close.
func (g *Gateway) Run(ctx context.Context) error {
	defer g.close()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	if g.cfg.BasicAuthFile != "" {
		go g.auth.Watch(watchCtx, 2*time.Second)
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- g.http.Serve(g.serve) }()
	g.ready.Store(true)
	g.Log.Info("listening", "addr", g.Addr(), "sandbox", g.Sim != nil, "storages", g.Root)
loop:
	for {
		select {
		case <-hup:
			if err := g.auth.Reload(); err != nil {
				g.Log.Error("reloading credentials on SIGHUP; keeping the previous ones", "err", err)
			} else {
				g.Log.Info("credentials reloaded on SIGHUP")
			}
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			break loop
		}
	}
	g.ready.Store(false)
	g.Log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()
	if err := g.http.Shutdown(shutdownCtx); err != nil {
		// The grace is over: cut what is left (requests still running,
		// clients still sending), rather than leave it to hold the stores.
		_ = g.http.Close()
		g.Log.Warn("in-flight requests cut off at shutdown", "err", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	g.Log.Info("stopped")
	return nil
}

// close releases everything Open opened, in reverse order.
func (g *Gateway) close() {
	if g.ln != nil && g.http == nil {
		_ = g.ln.Close()
	}
	if g.Core != nil {
		g.Core.Close()
	}
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}

// wrap applies w to h when w is set.
func wrap(w func(http.Handler) http.Handler, h http.Handler) http.Handler {
	if w == nil {
		return h
	}
	return w(h)
}

// CheckCredentials reports whether s is a valid --basic-auth value, so that
// a mistake is refused as a usage error before anything starts.
func CheckCredentials(s string) error {
	_, err := middleware.ParseCredentials(s)
	return err
}

// CheckTrustedProxies reports whether s is a valid --trusted-proxies value.
func CheckTrustedProxies(s string) error {
	_, err := middleware.ParseTrustedProxies(s)
	return err
}

// CheckAllowedHosts reports whether s is a valid --allowed-hosts value.
func CheckAllowedHosts(s string) error {
	_, err := middleware.ParseAllowedHosts(s)
	return err
}

// openEvents opens the event log in root and starts the event service on
// it; with send false, webhooks are queued in the outbox but not sent.
// metrics, when set, counts events and deliveries.
func openEvents(ctx context.Context, root string, cfg EventsConfig, send bool, log *slog.Logger, metrics *middleware.Metrics) (*sqlite.Events, *events.Hub, error) {
	store, err := sqlite.OpenEvents(root)
	if err != nil {
		return nil, nil, err
	}
	var global []domain.Webhook
	for _, u := range cfg.Webhooks {
		global = append(global, domain.Webhook{URL: u, Secret: cfg.WebhookSecret})
	}
	ec := events.Config{
		Store:          store,
		RetryMax:       cfg.WebhookRetryMax,
		Logger:         log.With("component", "events"),
		Global:         global,
		Retention:      cfg.Retention,
		RetentionCount: cfg.MaxEvents,
	}
	if send {
		ec.Sender = webhook.New(webhook.Options{Timeout: cfg.WebhookTimeout})
	}
	if metrics != nil {
		ec.OnEvent = func(t domain.EventType) { metrics.EventObserved(string(t)) }
		ec.OnDelivery = metrics.DeliveryObserved
	}
	hub := events.New(ec)
	if err := hub.Start(ctx); err != nil {
		_ = store.Close()
		return nil, nil, fmt.Errorf("start the event service: %w", err)
	}
	if metrics != nil {
		metrics.WatchEvents(hub, time.Now)
	}
	return store, hub, nil
}

// EventService is the event log of a folder and the event service on it,
// without devices or HTTP: the benchmarks fill and drain a webhook outbox
// with it.
type EventService struct {
	*events.Hub
	store *sqlite.Events
}

// OpenEventService opens the event log in dir and starts the event service
// on it. With send false, deliveries to cfg's webhooks are queued in the
// outbox but not sent, until a service that sends opens the same folder.
func OpenEventService(ctx context.Context, dir string, cfg EventsConfig, send bool) (*EventService, error) {
	store, hub, err := openEvents(ctx, dir, cfg, send, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		return nil, err
	}
	return &EventService{Hub: hub, store: store}, nil
}

// Close stops the event service, once every event emitted is written,
// then closes the log.
func (e *EventService) Close() error {
	err := e.Hub.Close()
	if cerr := e.store.Close(); err == nil {
		err = cerr
	}
	return err
}
