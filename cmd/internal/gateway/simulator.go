package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/domain"
)

// SimulatorConfig is what `whatsapp simulator` needs.
type SimulatorConfig struct {
	Host  string
	Port  int
	Dir   string // where the simulated world persists
	Debug bool
	// FlagName names a setting in errors as the user gave it; nil names
	// the flag.
	FlagName func(flag string) string
}

// Simulator is the simulated WhatsApp network as a process of its own: one
// port serves the WhatsApp protocol (a websocket upgrade on any path) and
// the sandbox API under /sandbox, so that several gateways started with
// --simulator share one simulated WhatsApp.
type Simulator struct {
	*wasim.Server
	log  *slog.Logger
	lock *storageLock
}

// OpenSimulator opens the simulated world in cfg.Dir and serves it on
// cfg.Host:cfg.Port. It signs with a certificate root of its own, kept in
// cfg.Dir, which gateways fetch from GET /sandbox/certificate-root.
func OpenSimulator(cfg SimulatorConfig, logOut io.Writer) (*Simulator, error) {
	name := func(flag string) string {
		if cfg.FlagName != nil {
			return cfg.FlagName(flag)
		}
		return "--" + flag
	}
	log := NewLogger(logOut, cfg.Debug)
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name("dir"), err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: %w", name("dir"), err)
	}
	// Two simulators on one folder would write one world's files at once.
	lock, err := lockFolder(dir, "simulator", name("dir"))
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(cfg.Host, strconv.Itoa(cfg.Port)))
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("%s: %w", name("port"), err)
	}
	sim, err := wasim.New(wasim.Options{
		Dir: dir, Logger: log.With("component", "wasim"), Listener: ln, OwnRoot: true,
		API: func(s *wasim.Server) http.Handler {
			return sandboxOnly(httpapi.NewHandler(httpapi.Config{Sandbox: s, Logger: log, AccessLog: logOut}))
		},
	})
	if err != nil {
		lock.release()
		return nil, fmt.Errorf("start the simulated WhatsApp network: %w", err)
	}
	if !isLoopback(ln.Addr()) {
		log.Warn("the simulator listens beyond loopback and has no credentials: anyone who can reach it can link devices and read the simulated phones' messages")
	}
	return &Simulator{Server: sim, log: log, lock: lock}, nil
}

// sandboxOnly passes the sandbox API and the health probes to h, which
// serves the whole gateway API, and answers anything else 404: the
// simulator has no devices of its own.
func sandboxOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if strings.HasPrefix(p, "/sandbox/") || p == "/health" || p == "/readyz" {
			h.ServeHTTP(w, r)
			return
		}
		envelope.Error(w, http.StatusNotFound, "no such endpoint on the simulator: "+middleware.Bound(r.Method)+" "+middleware.Bound(p)+" (it serves /sandbox/…)")
	})
}

// Run logs where the simulator listens, serves until ctx ends, then closes
// every connection and the world's stores.
func (s *Simulator) Run(ctx context.Context) error {
	s.log.Info("listening", "addr", s.Addr(), "simulator", true)
	<-ctx.Done()
	s.log.Info("shutting down")
	err := s.Close()
	s.lock.release()
	if err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}

// simulatorWait is how long a gateway started with --simulator waits for
// the simulator to answer, so that the two can start side by side (a
// compose file, a test) in either order.
const simulatorWait = 30 * time.Second

// simulatorRoot fetches the certificate root of the simulator at r, trying
// again while it cannot be reached, for up to simulatorWait.
func simulatorRoot(ctx context.Context, r *wasim.Remote, log *slog.Logger) ([32]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, simulatorWait)
	defer cancel()
	wait := 50 * time.Millisecond
	for logged := false; ; logged = true {
		root, err := r.CertificateRoot(ctx)
		if err == nil || domain.ErrorCode(err) != domain.EUNAVAILABLE {
			if err != nil {
				return root, fmt.Errorf("the simulator at %s: %w", r.URL(), err)
			}
			return root, nil
		}
		if !logged {
			log.Info("waiting for the simulator", "url", r.URL())
		}
		select {
		case <-ctx.Done():
			return root, fmt.Errorf("the simulator at %s did not answer within %s: %w", r.URL(), simulatorWait, err)
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// CheckSimulatorURL reports whether s is a valid --simulator value.
func CheckSimulatorURL(s string) error {
	_, err := wasim.NewRemote(s)
	return err
}
