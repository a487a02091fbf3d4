package main

import (
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
	"github.com/gowa-dev/gowa/adapters/qrpng"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
	"github.com/gowa-dev/gowa/domain/events"
	"github.com/gowa-dev/gowa/ports"
)

// gateway is the composition root: every adapter, the device service and
// the HTTP server, wired together. Open it with openGateway, Run it, and it
// closes itself when Run returns.
type gateway struct {
	cfg      Config
	log      *slog.Logger
	ln       net.Listener
	http     *http.Server
	devices  *device.Service
	registry *sqlite.Registry
	eventDB  *sqlite.Events
	events   *events.Hub
	sim      *wasim.Server // nil outside the sandbox
	auth     *middleware.Auth
	ready    atomic.Bool
	root     string
}

// openGateway opens the stores, starts restoring sessions and binds the
// listener. It does not serve until Run.
func openGateway(ctx context.Context, cfg Config, sandbox bool, logOut io.Writer) (g *gateway, err error) {
	level := slog.LevelInfo
	if cfg.Debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level}))
	g = &gateway{cfg: cfg, log: log}
	opened := g // the early returns below set g to nil
	defer func() {
		if err != nil {
			opened.close()
		}
	}()

	creds, err := middleware.ParseCredentials(cfg.BasicAuth)
	if err != nil {
		return nil, fmt.Errorf("--basic-auth: %w", err)
	}
	g.auth, err = middleware.NewAuth(creds, cfg.BasicAuthFile, log)
	if err != nil {
		return nil, fmt.Errorf("--basic-auth-file: %w", err)
	}
	proxies, err := middleware.ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}

	g.root, err = filepath.Abs(cfg.Storages)
	if err != nil {
		return nil, fmt.Errorf("storage folder: %w", err)
	}
	if err := os.MkdirAll(g.root, 0o700); err != nil {
		return nil, fmt.Errorf("storage folder: %w", err)
	}
	sessions, err := sqlite.NewSessions(g.root)
	if err != nil {
		return nil, err
	}
	g.registry, err = sqlite.OpenRegistry(g.root)
	if err != nil {
		return nil, err
	}

	waOpts := whatsapp.Options{OS: cfg.OS, Logger: log, Debug: cfg.Debug}
	var sb ports.Sandbox
	if sandbox {
		g.sim, err = wasim.New(wasim.Options{Dir: filepath.Join(g.root, ".wasim"), Logger: log.With("component", "wasim")})
		if err != nil {
			return nil, fmt.Errorf("start the simulated WhatsApp network: %w", err)
		}
		certRoot := wasim.RootPublicKey()
		waOpts.HTTPClient = g.sim.HTTPClient()
		waOpts.CertRoot = &certRoot
		sb = g.sim
		log.Warn("SANDBOX: devices connect to a simulated WhatsApp network, not to WhatsApp", "storages", g.root)
	}

	metrics := middleware.NewMetrics(func() map[string]int { return g.devices.CountByState() })
	// The event service starts before the devices, so that the events of
	// the sessions restored at start-up are logged and sent.
	g.eventDB, err = sqlite.OpenEvents(g.root)
	if err != nil {
		return nil, err
	}
	var global []domain.Webhook
	for _, u := range cfg.Webhooks {
		global = append(global, domain.Webhook{URL: u, Secret: cfg.WebhookSecret})
	}
	g.events = events.New(events.Config{
		Store:          g.eventDB,
		Sender:         webhook.New(webhook.Options{Timeout: cfg.WebhookTimeout}),
		RetryMax:       cfg.WebhookRetryMax,
		Logger:         log.With("component", "events"),
		Global:         global,
		Retention:      cfg.EventsRetention,
		RetentionCount: cfg.EventsMax,
		OnEvent:        func(t domain.EventType) { metrics.EventObserved(string(t)) },
		OnDelivery:     metrics.DeliveryObserved,
	})
	if err := g.events.Start(ctx); err != nil {
		return nil, fmt.Errorf("start the event service: %w", err)
	}
	metrics.WatchEvents(g.events, time.Now)
	g.devices = device.New(device.Config{
		Events:      g.events,
		WhatsApp:    whatsapp.New(waOpts),
		Sessions:    sessions,
		Registry:    g.registry,
		Logger:      log,
		DisplayName: cfg.OS,
		OnLogin: func(m domain.PairingMethod, outcome string) {
			metrics.LoginObserved(string(m), outcome)
		},
	})
	if err := g.devices.Start(ctx); err != nil {
		return nil, err
	}

	addr := net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port))
	g.ln, err = net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	handler := httpapi.NewHandler(httpapi.Config{
		Devices:  g.devices,
		Sandbox:  sb,
		QR:       qrpng.New(),
		Logger:   log,
		Ready:    g.ready.Load,
		Auth:     g.auth,
		Proxies:  proxies,
		Throttle: middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:  metrics,
		Events:   g.events,
	})
	g.http = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// Event streams never go idle: end them when shutdown begins, so that
	// the grace period is left to requests that finish.
	g.http.RegisterOnShutdown(g.events.CloseStreams)
	if !g.auth.Enabled() && !isLoopback(g.ln.Addr()) {
		log.Warn("no credentials are configured and the API listens beyond loopback: anyone who can reach it controls the linked WhatsApp accounts; set --basic-auth or APP_BASIC_AUTH")
	}
	return g, nil
}

// Addr is the address the gateway listens on.
func (g *gateway) Addr() string { return g.ln.Addr().String() }

// Run serves until ctx ends, then shuts down gracefully: readiness goes to
// 503, in-flight requests finish (bounded by ShutdownGrace), WhatsApp
// connections close without logging out and the stores close.
func (g *gateway) Run(ctx context.Context) error {
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
	go func() { serveErr <- g.http.Serve(g.ln) }()
	g.ready.Store(true)
	g.log.Info("listening", "addr", g.Addr(), "sandbox", g.sim != nil, "storages", g.root)
loop:
	for {
		select {
		case <-hup:
			if err := g.auth.Reload(); err != nil {
				g.log.Error("reloading credentials on SIGHUP; keeping the previous ones", "err", err)
			} else {
				g.log.Info("credentials reloaded on SIGHUP")
			}
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-ctx.Done():
			break loop
		}
	}
	g.ready.Store(false)
	g.log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), g.cfg.ShutdownGrace)
	defer cancel()
	if err := g.http.Shutdown(shutdownCtx); err != nil {
		g.log.Warn("in-flight requests cut off at shutdown", "err", err)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	g.log.Info("stopped")
	return nil
}

// close releases everything openGateway opened, in reverse order.
func (g *gateway) close() {
	if g.ln != nil && g.http == nil {
		_ = g.ln.Close()
	}
	if g.devices != nil {
		_ = g.devices.Close()
	}
	// After the devices, so that their last events are written.
	if g.events != nil {
		_ = g.events.Close()
	}
	if g.eventDB != nil {
		_ = g.eventDB.Close()
	}
	if g.sim != nil {
		_ = g.sim.Close()
	}
	if g.registry != nil {
		_ = g.registry.Close()
	}
}

func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
