package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/gowa-dev/gowa/adapters/httpapi"
)

// Config is the gateway's configuration: environment variables (APP_…)
// first, then flags, which win. It holds secrets, so it is never logged.
type Config struct {
	Port           int           `envconfig:"PORT" default:"3000"`
	Host           string        `envconfig:"HOST" default:""`
	Storages       string        `envconfig:"STORAGES"`
	OS             string        `envconfig:"OS" default:"GOWA"`
	Debug          bool          `envconfig:"DEBUG"`
	BasicAuth      string        `envconfig:"BASIC_AUTH"`
	BasicAuthFile  string        `envconfig:"BASIC_AUTH_FILE"`
	TrustedProxies string        `envconfig:"TRUSTED_PROXIES"`
	AllowedHosts   string        `envconfig:"ALLOWED_HOSTS"`
	ShutdownGrace  time.Duration `envconfig:"SHUTDOWN_GRACE" default:"15s"`

	// Connection limits, not flags: tests shorten them (0: the
	// httpapi defaults).
	Limits      httpapi.Limits `ignored:"true"`
	BodyTimeout time.Duration  `ignored:"true"`
}

// Default storage folders: the sandbox keeps its simulated sessions apart
// from real ones.
const (
	defaultStorages        = "./storages"
	defaultSandboxStorages = "./storages-sandbox"
)

// loadConfig reads the environment, then the flags in args, for command
// cmd ("rest" or "sandbox").
func loadConfig(cmd string, args []string, stderr io.Writer) (Config, error) {
	var cfg Config
	if err := envconfig.Process("APP", &cfg); err != nil {
		return Config{}, fmt.Errorf("environment: %w", err)
	}
	if cfg.Storages == "" {
		cfg.Storages = defaultStorages
		if cmd == "sandbox" {
			cfg.Storages = defaultSandboxStorages
		}
	}
	fs := flag.NewFlagSet("whatsapp "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&cfg.Port, "port", cfg.Port, "port to listen on (APP_PORT)")
	fs.StringVar(&cfg.Host, "host", cfg.Host, "address to listen on; empty means every interface (APP_HOST)")
	fs.StringVar(&cfg.Storages, "storages", cfg.Storages, "folder for sessions and the device registry (APP_STORAGES)")
	fs.StringVar(&cfg.OS, "os", cfg.OS, "the name phones show for linked devices (APP_OS)")
	fs.BoolVar(&cfg.Debug, "debug", cfg.Debug, "debug logs, including whatsmeow's (APP_DEBUG)")
	fs.Var(secret{&cfg.BasicAuth}, "basic-auth", "`user:pass` pairs, comma-separated (APP_BASIC_AUTH)")
	fs.Var(secret{&cfg.BasicAuth}, "b", "short for --basic-auth `user:pass`")
	fs.StringVar(&cfg.BasicAuthFile, "basic-auth-file", cfg.BasicAuthFile, "file of user:pass lines, re-read on SIGHUP and on change (APP_BASIC_AUTH_FILE)")
	fs.StringVar(&cfg.TrustedProxies, "trusted-proxies", cfg.TrustedProxies, "IPs and CIDRs of reverse proxies whose X-Forwarded-For is believed (APP_TRUSTED_PROXIES)")
	fs.StringVar(&cfg.AllowedHosts, "allowed-hosts", cfg.AllowedHosts, "host names the API answers to besides IPs and localhost, comma-separated, for a proxy that keeps the public name in Host (APP_ALLOWED_HOSTS)")
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long in-flight requests may take to finish at shutdown (APP_SHUTDOWN_GRACE)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return Config{}, errors.New("port must be between 1 and 65535 (0 picks a free one)")
	}
	return cfg, nil
}

// secret is a flag.Value that never shows its value, so that `-h` does not
// print credentials taken from the environment as the flag's default.
type secret struct{ p *string }

func (s secret) String() string { return "" }

func (s secret) Set(v string) error {
	*s.p = v
	return nil
}
