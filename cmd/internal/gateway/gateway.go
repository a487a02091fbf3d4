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
	// Simulator, with Sandbox, is the URL of a simulator running on its own
	// (`whatsapp simulator`) to attach to, instead of starting one in this
	// process: several gateways share its simulated WhatsApp.
	Simulator string
	// UI serves the browser console at "/".
	UI bool
	// Cluster, when its DatabaseURI is set, keeps the state in PostgreSQL
	// for several replicas; zero keeps SQLite under Storages.
	Cluster ClusterConfig
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

// ClusterConfig is the configuration of several replicas on one
// PostgreSQL. DatabaseURI holds a password: it is never logged.
type ClusterConfig struct {
	DatabaseURI  string
	AdvertiseURL string        // checked by the caller (CheckAdvertiseURL)
	LeaseTTL     time.Duration // 0: 15 s
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
	Sim      *wasim.Server // the simulator in this process; nil outside the sandbox or with Config.Simulator
	// Network is the simulated network the sandbox serves: Sim, or the
	// remote simulator of Config.Simulator; nil outside the sandbox.
	Network sandbox.Network
	remote  *wasim.Remote
	Metrics *middleware.Metrics
	lock    *storageLock
	eventDB *sqlite.Events
	// cluster is what PostgreSQL mode adds (see cluster.go); nil on SQLite.
	cluster *clusterCore
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
// the one holding it. With Config.Cluster's database, the stores are in
// PostgreSQL and no folder is locked (but the sandbox's own simulator's).
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
	clustered := cfg.Cluster.DatabaseURI != ""
	// The folder holds the sessions on SQLite, and the simulated world of
	// a sandbox that runs its own simulator.
	if !clustered || (cfg.Sandbox && cfg.Simulator == "") {
		if err := os.MkdirAll(c.Root, 0o700); err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.name("storages"), err)
		}
		if c.lock, err = lockStorage(c.Root); err != nil {
			return nil, err
		}
	}

	cfg.OS = cmp.Or(cfg.OS, DefaultOS)
	waOpts := whatsapp.Options{OS: cfg.OS, Logger: log, Debug: cfg.Debug, FirstCodeLife: cfg.Tuning.FirstQR, CodeLife: cfg.Tuning.NextQR,
		OnWhatsAppFor: cfg.Tuning.OnWhatsAppFor, OffWhatsAppFor: cfg.Tuning.OffWhatsAppFor}
	if err := c.openNetwork(ctx, cfg, &waOpts); err != nil {
		return nil, err
	}
	c.Metrics = middleware.NewMetrics(func() map[string]int { return c.Devices.CountByState() })
	devCfg := device.Config{
		Logger:      log,
		DisplayName: cfg.OS,
		LoginWait:   cfg.Tuning.LoginWait,
		UnlinkWait:  cfg.Tuning.UnlinkWait,
		SendWait:    cfg.Tuning.SendWait,
		OnLogin: func(m domain.PairingMethod, outcome string) {
			c.Metrics.LoginObserved(string(m), outcome)
		},
	}
	if clustered {
		if err := c.openCluster(ctx, cfg, waOpts, devCfg); err != nil {
			return nil, err
		}
		return c, nil
	}

	sessions, err := sqlite.NewSessions(c.Root)
	if err != nil {
		return nil, err
	}
	c.Registry, err = sqlite.OpenRegistry(c.Root)
	if err != nil {
		return nil, err
	}
	waOpts.Locate = sessions.Locate
	// The event service starts before the devices, so that the events of
	// the sessions restored at start-up are logged and sent.
	if c.eventDB, c.Events, err = openEvents(ctx, c.Root, cfg.Events, true, log, c.Metrics); err != nil {
		return nil, err
	}
	devCfg.Events = c.Events
	devCfg.WhatsApp = whatsapp.New(waOpts)
	devCfg.Sessions = sessions
	devCfg.Registry = c.Registry
	c.Devices = device.New(devCfg)
	if err := c.Devices.Start(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// openNetwork attaches the sandbox to its simulated WhatsApp network: the
// simulator at Config.Simulator, or one of its own in the storage folder.
// Outside the sandbox it does nothing.
func (c *Core) openNetwork(ctx context.Context, cfg Config, waOpts *whatsapp.Options) (err error) {
	log := c.Log
	switch {
	case cfg.Sandbox && cfg.Simulator != "":
		if c.remote, err = wasim.NewRemote(cfg.Simulator); err != nil {
			return fmt.Errorf("%s: %w", cfg.name("simulator"), err)
		}
		certRoot, err := simulatorRoot(ctx, c.remote, log)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.name("simulator"), err)
		}
		c.Network = c.remote
		waOpts.HTTPClient = c.remote.HTTPClient()
		waOpts.CertRoot = &certRoot
		log.Warn("SANDBOX: devices connect to the simulated WhatsApp network at "+c.remote.URL()+", not to WhatsApp", "storages", c.Root)
	case cfg.Sandbox:
		c.Sim, err = wasim.New(wasim.Options{Dir: filepath.Join(c.Root, ".wasim"), Logger: log.With("component", "wasim")})
		if err != nil {
			return fmt.Errorf("start the simulated WhatsApp network: %w", err)
		}
		c.Network = c.Sim
		certRoot := wasim.RootPublicKey()
		waOpts.HTTPClient = c.Sim.HTTPClient()
		waOpts.CertRoot = &certRoot
		log.Warn("SANDBOX: devices connect to a simulated WhatsApp network, not to WhatsApp", "storages", c.Root)
	}
	return nil
}

// Close closes what OpenCore opened, in reverse order, the lock last.
func (c *Core) Close() {
	if c.cluster != nil {
		// The coordinator first, so that it starts nothing more.
		c.cluster.stop()
	}
	if c.Devices != nil {
		_ = c.Devices.Close()
	}
	if c.cluster != nil {
		// After the devices: their last statuses are written.
		c.cluster.stopStatus()
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
	if c.remote != nil {
		_ = c.remote.Close()
	}
	if c.Registry != nil {
		_ = c.Registry.Close()
	}
	if c.cluster != nil {
		if c.cluster.leaseDB != nil {
			c.cluster.leaseDB.Close()
		}
		c.cluster.db.Close()
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
	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	g.ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cfg.name("port"), err)
	}
	hc := httpapi.Config{
		Devices:  g.Devices,
		Sandbox:  g.Network,
		QR:       qrpng.New(),
		Logger:   log,
		Ready:    g.isReady,
		Auth:     g.auth,
		Proxies:  proxies,
		Throttle: middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:  g.Metrics,
		Sites:    middleware.NewSiteGuard(allowedHosts, isLoopback(g.ln.Addr())),
		Events:   g.Events,

		AccessLog:   logOut,
		BodyTimeout: cfg.Tuning.BodyTimeout,
		UI:          cfg.UI,
	}
	if cc := g.cluster; cc != nil {
		hc.Devices = clusterDevices{Service: g.Devices, statuses: cc.statuses}
		listing := statusListing{cc.statuses}
		hc.Listing = listing
		hc.Forwarding = &httpapi.Forwarding{Router: router{cc.coord}, Self: cc.coord.Self(), Key: cc.key, LoggedIn: listing.loggedIn}
	}
	handler := httpapi.NewHandler(hc)
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

// isReady is the readiness probe's answer: serving, not shutting down,
// and, among replicas, renewing its leases.
func (g *Gateway) isReady() bool {
	return g.ready.Load() && (g.cluster == nil || g.cluster.ready())
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
	g.Log.Info("listening", "addr", g.Addr(), "sandbox", g.Network != nil, "storages", g.Root)
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
	if g.cluster != nil {
		// Hand every device over while the API still answers: calls for
		// them go to their new replicas meanwhile.
		drainCtx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
		if err := g.cluster.drain(drainCtx); err != nil {
			g.Log.Warn("handing the devices over at shutdown; the others take the rest when their leases lapse", "err", err)
		}
		cancel()
		// Calls routed here before the handoff may still wait in the
		// listen queue (a loaded machine accepts them late). Closing the
		// listener now would reset them, and their callers could not tell
		// whether they were carried out; served a moment longer, they are
		// refused as retryable and go to the devices' new replicas.
		linger := time.NewTimer(drainLinger)
		<-linger.C
	}
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
	hub, err := startHub(ctx, hubConfig(store, cfg, send, log, metrics), metrics)
	if err != nil {
		_ = store.Close()
		return nil, nil, err
	}
	return store, hub, nil
}

// hubConfig is the event service's configuration on store; with send false,
// webhooks are queued in the outbox but not sent. metrics, when set, counts
// events and deliveries.
func hubConfig(store events.Store, cfg EventsConfig, send bool, log *slog.Logger, metrics *middleware.Metrics) events.Config {
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
	return ec
}

// startHub starts the event service of ec.
func startHub(ctx context.Context, ec events.Config, metrics *middleware.Metrics) (*events.Hub, error) {
	hub := events.New(ec)
	if err := hub.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the event service: %w", err)
	}
	if metrics != nil {
		metrics.WatchEvents(hub, time.Now)
	}
	return hub, nil
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
