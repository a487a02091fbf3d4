package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/kelseyhightower/envconfig"
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
	ShutdownGrace  time.Duration `envconfig:"SHUTDOWN_GRACE" default:"15s"`

	// Live events: global webhooks and the event log's retention.
	Webhooks          []string      `envconfig:"WEBHOOK"`
	WebhookSecret     string        `envconfig:"WEBHOOK_SECRET"`
	WebhookSecretFile string        `envconfig:"WEBHOOK_SECRET_FILE"`
	EventsRetention   time.Duration `envconfig:"EVENTS_RETENTION" default:"24h"`
	EventsMax         int           `envconfig:"EVENTS_MAX" default:"1000000"`
	WebhookTimeout    time.Duration `envconfig:"WEBHOOK_TIMEOUT" default:"10s"`
	WebhookRetryMax   time.Duration `envconfig:"WEBHOOK_RETRY_MAX" default:"10m"`
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
	fs.DurationVar(&cfg.ShutdownGrace, "shutdown-grace", cfg.ShutdownGrace, "how long in-flight requests may take to finish at shutdown (APP_SHUTDOWN_GRACE)")
	fs.Var(&urlList{p: &cfg.Webhooks}, "webhook", "`URL` every device's events are POSTed to; repeatable or comma-separated (APP_WEBHOOK)")
	fs.Var(secret{&cfg.WebhookSecret}, "webhook-secret", "`secret` that signs global webhook deliveries, at least 16 bytes; required with --webhook (APP_WEBHOOK_SECRET)")
	fs.StringVar(&cfg.WebhookSecretFile, "webhook-secret-file", cfg.WebhookSecretFile, "file holding the webhook secret, instead of --webhook-secret (APP_WEBHOOK_SECRET_FILE)")
	fs.DurationVar(&cfg.EventsRetention, "events-retention", cfg.EventsRetention, "how long the event log keeps events for resuming streams (APP_EVENTS_RETENTION)")
	fs.IntVar(&cfg.EventsMax, "events-max", cfg.EventsMax, "most events the event log keeps (APP_EVENTS_MAX)")
	fs.DurationVar(&cfg.WebhookTimeout, "webhook-timeout", cfg.WebhookTimeout, "how long a webhook may take to answer a delivery (APP_WEBHOOK_TIMEOUT)")
	fs.DurationVar(&cfg.WebhookRetryMax, "webhook-retry-max", cfg.WebhookRetryMax, "longest wait between two tries of a failing delivery (APP_WEBHOOK_RETRY_MAX)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := checkWebhooks(&cfg); err != nil {
		return Config{}, err
	}
	if cfg.EventsRetention <= 0 || cfg.EventsMax <= 0 || cfg.WebhookTimeout <= 0 || cfg.WebhookRetryMax <= 0 {
		return Config{}, errors.New("--events-retention, --events-max, --webhook-timeout and --webhook-retry-max must be positive")
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
