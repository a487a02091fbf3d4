package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// Config is the gateway's configuration: environment variables (APP_…)
// first, then flags, which win. It holds secrets, so it is never logged.
//
// The variables are named by split_words rather than by envconfig tags: a
// tag makes envconfig fall back to the bare name (PORT, HOST, DEBUG, OS),
// which platforms and shells set for their own purposes.
type Config struct {
	Port           int           `split_words:"true" default:"3000"`
	Host           string        `split_words:"true"`
	Storages       string        `split_words:"true"`
	OS             string        `split_words:"true" default:"GOWA"`
	Debug          bool          `split_words:"true"`
	BasicAuth      string        `split_words:"true"`
	BasicAuthFile  string        `split_words:"true"`
	TrustedProxies string        `split_words:"true"`
	AllowedHosts   string        `split_words:"true"`
	ShutdownGrace  time.Duration `split_words:"true" default:"15s"`
	UI             bool          `split_words:"true" default:"true"`
	// Simulator is the URL of a standalone simulator (`whatsapp
	// simulator`) that `whatsapp sandbox` attaches to instead of starting
	// its own; `whatsapp rest` ignores it.
	Simulator string `split_words:"true"`

	// Live events: global webhooks and the event log's retention.
	Webhook           []string      `split_words:"true"` // URLs; repeatable flag, comma-separated variable
	WebhookSecret     string        `split_words:"true"`
	WebhookSecretFile string        `split_words:"true"`
	WebhookTimeout    time.Duration `split_words:"true" default:"10s"`
	WebhookRetryMax   time.Duration `split_words:"true" default:"10m"`
	EventsRetention   time.Duration `split_words:"true" default:"24h"`
	EventsMax         int           `split_words:"true" default:"1000000"`

	// Several replicas on one PostgreSQL: the database (APP_DB_URI; it
	// holds a password, so it is never logged or echoed), the URL other
	// replicas reach this one at, and how long a device's lease lasts.
	DbURI        string        `split_words:"true"`
	AdvertiseURL string        `split_words:"true"`
	LeaseTTL     time.Duration `split_words:"true" default:"15s"`

	// BodyTimeout bounds reading a request body (0: the default); not a
	// flag, tests shorten or lengthen it.
	BodyTimeout time.Duration `ignored:"true"`

	// names maps a flag name to how the user gave that setting ("--port",
	// "-b", "APP_PORT"), so that an error names what the user typed.
	names map[string]string
}

// envPrefix prefixes every environment variable.
const envPrefix = "APP"

// name returns how the setting of flag was given: the flag as typed, its
// environment variable, or the flag's long form when neither (a default).
func (c Config) name(flag string) string {
	if n, ok := c.names[flag]; ok {
		return n
	}
	return "--" + flag
}

// envName is the environment variable of a flag: --basic-auth-file is
// APP_BASIC_AUTH_FILE, and --db, whose variable says what it holds,
// APP_DB_URI.
func envName(flag string) string {
	if flag == "db" {
		return envPrefix + "_DB_URI"
	}
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Default storage folders: the sandbox keeps its simulated sessions apart
// from real ones.
const (
	defaultStorages        = "./storages"
	defaultSandboxStorages = "./storages-sandbox"
)

// usageError is a mistake in the command line or the environment: it is
// reported in one line and the process exits 2.
type usageError struct {
	cmd string // "rest", "sandbox", …; "" for the top level
	msg string
}

func (e *usageError) Error() string { return e.msg }

// loadConfig reads the environment, then the flags in args, for command
// cmd ("rest" or "sandbox"), and checks every setting it can check without
// touching the machine. Errors are *usageError; -h prints the flags to out
// and returns flag.ErrHelp.
func loadConfig(cmd string, args []string, out io.Writer) (Config, error) {
	cfg := Config{names: map[string]string{}}
	if err := envconfig.Process(envPrefix, &cfg); err != nil {
		return Config{}, &usageError{cmd, envMessage(err)}
	}
	if cfg.Storages == "" {
		cfg.Storages = defaultStorages
		if cmd == "sandbox" {
			cfg.Storages = defaultSandboxStorages
		}
	}
	fs := newFlagSet(cmd)
	var bad badValue
	fs.Var(&portValue{&cfg.Port, &bad}, "port", "the `port` to listen on, 1 to 65535; 0 picks a free one (APP_PORT)")
	fs.StringVar(&cfg.Host, "host", cfg.Host, "address to listen on; empty means every interface (APP_HOST)")
	fs.StringVar(&cfg.Storages, "storages", cfg.Storages, "folder for sessions and the device registry (APP_STORAGES)")
	fs.StringVar(&cfg.OS, "os", cfg.OS, "the name phones show for linked devices (APP_OS)")
	fs.Var(&boolValue{"debug", &cfg.Debug, &bad}, "debug", "debug logs, including whatsmeow's (APP_DEBUG)")
	fs.Var(secret{&cfg.BasicAuth}, "basic-auth", "`user:pass` pairs, comma-separated (APP_BASIC_AUTH)")
	fs.Var(secret{&cfg.BasicAuth}, "b", "short for --basic-auth `user:pass`")
	fs.StringVar(&cfg.BasicAuthFile, "basic-auth-file", cfg.BasicAuthFile, "file of user:pass lines, re-read on SIGHUP and on change (APP_BASIC_AUTH_FILE)")
	fs.StringVar(&cfg.TrustedProxies, "trusted-proxies", cfg.TrustedProxies, "IPs and CIDRs of reverse proxies whose X-Forwarded-For is believed (APP_TRUSTED_PROXIES)")
	fs.StringVar(&cfg.AllowedHosts, "allowed-hosts", cfg.AllowedHosts, "host names the API answers to besides IPs and localhost, comma-separated, for a proxy that keeps the public name in Host (APP_ALLOWED_HOSTS)")
	fs.Var(&boolValue{"ui", &cfg.UI, &bad}, "ui", "serve the browser console at / (on by default; --ui=false turns it off) (APP_UI)")
	fs.Var(&durationValue{"shutdown-grace", &cfg.ShutdownGrace, &bad}, "shutdown-grace", "how long (a `duration` such as 15s) in-flight requests may take to finish at shutdown (APP_SHUTDOWN_GRACE)")
	fs.Var(&urlList{p: &cfg.Webhook}, "webhook", "`URL` every device's events are POSTed to; repeatable or comma-separated (APP_WEBHOOK)")
	fs.Var(secret{&cfg.WebhookSecret}, "webhook-secret", "`secret` that signs global webhook deliveries, at least 16 bytes; required with --webhook (APP_WEBHOOK_SECRET)")
	fs.StringVar(&cfg.WebhookSecretFile, "webhook-secret-file", cfg.WebhookSecretFile, "file holding the webhook secret, instead of --webhook-secret (APP_WEBHOOK_SECRET_FILE)")
	fs.Var(&durationValue{"webhook-timeout", &cfg.WebhookTimeout, &bad}, "webhook-timeout", "how long (a `duration`) a webhook may take to answer a delivery (APP_WEBHOOK_TIMEOUT)")
	fs.Var(&durationValue{"webhook-retry-max", &cfg.WebhookRetryMax, &bad}, "webhook-retry-max", "longest wait (a `duration`) between two tries of a failing delivery (APP_WEBHOOK_RETRY_MAX)")
	fs.Var(&durationValue{"events-retention", &cfg.EventsRetention, &bad}, "events-retention", "how long (a `duration`) the event log keeps events for resuming streams (APP_EVENTS_RETENTION)")
	fs.Var(&intValue{"events-max", &cfg.EventsMax, &bad}, "events-max", "most events (a `number`) the event log keeps (APP_EVENTS_MAX)")
	fs.Var(secret{&cfg.DbURI}, "db", "PostgreSQL `URI` (postgres://user:pass@host/db) shared by several replicas; without it, one gateway on SQLite under --storages (APP_DB_URI)")
	fs.StringVar(&cfg.AdvertiseURL, "advertise-url", cfg.AdvertiseURL, "`URL` the other replicas reach this one at, such as http://10.0.0.5:3000; required with --db (APP_ADVERTISE_URL)")
	fs.Var(&durationValue{"lease-ttl", &cfg.LeaseTTL, &bad}, "lease-ttl", "how long (a `duration`, at least 1s) a replica's hold on a device lasts without renewal; a dead replica's devices move after it (APP_LEASE_TTL)")
	if cmd == "sandbox" {
		fs.StringVar(&cfg.Simulator, "simulator", cfg.Simulator, "`URL` of a simulator started with 'whatsapp simulator' (http://host:port) to attach to, instead of simulating WhatsApp in this process (APP_SIMULATOR)")
	} else {
		cfg.Simulator = ""
	}
	// A setting is named as its flag when the flag was given, else as its
	// variable when that is set.
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := os.LookupEnv(envName(f.Name)); ok && len(f.Name) > 1 {
			cfg.names[f.Name] = envName(f.Name)
		}
	})
	if err := parseFlags(fs, cmd, args, out, &bad); err != nil {
		return Config{}, err
	}
	fs.Visit(func(f *flag.Flag) {
		name := "--" + f.Name
		if len(f.Name) == 1 {
			name = "-" + f.Name
		}
		if f.Name == "b" {
			cfg.names["basic-auth"] = name
		}
		cfg.names[f.Name] = name
	})

	if cfg.Port < 0 || cfg.Port > 65535 {
		return Config{}, &usageError{cmd, fmt.Sprintf("%s: %d is not a port; use 1 to 65535, or 0 for any free port", cfg.name("port"), cfg.Port)}
	}
	if cfg.ShutdownGrace < 0 {
		return Config{}, &usageError{cmd, cfg.name("shutdown-grace") + ": must not be negative"}
	}
	if err := gateway.CheckCredentials(cfg.BasicAuth); err != nil {
		return Config{}, &usageError{cmd, cfg.name("basic-auth") + ": " + err.Error()}
	}
	if err := gateway.CheckTrustedProxies(cfg.TrustedProxies); err != nil {
		return Config{}, &usageError{cmd, cfg.name("trusted-proxies") + ": " + err.Error()}
	}
	if err := gateway.CheckAllowedHosts(cfg.AllowedHosts); err != nil {
		return Config{}, &usageError{cmd, cfg.name("allowed-hosts") + ": " + err.Error()}
	}
	for _, f := range []struct {
		flag string
		ok   bool
	}{
		{"webhook-timeout", cfg.WebhookTimeout > 0},
		{"webhook-retry-max", cfg.WebhookRetryMax > 0},
		{"events-retention", cfg.EventsRetention > 0},
		{"events-max", cfg.EventsMax > 0},
	} {
		if !f.ok {
			return Config{}, &usageError{cmd, cfg.name(f.flag) + ": must be positive"}
		}
	}
	if cfg.Simulator != "" {
		if err := gateway.CheckSimulatorURL(cfg.Simulator); err != nil {
			return Config{}, &usageError{cmd, cfg.name("simulator") + ": " + err.Error()}
		}
	}
	if err := checkWebhooks(&cfg); err != nil {
		return Config{}, &usageError{cmd, err.Error()}
	}
	if err := checkCluster(&cfg); err != nil {
		return Config{}, &usageError{cmd, err.Error()}
	}
	return cfg, nil
}

// newFlagSet returns a flag set that prints nothing itself: parseFlags
// reports errors in one line and prints the flags only when asked.
func newFlagSet(cmd string) *flag.FlagSet {
	fs := flag.NewFlagSet("whatsapp "+cmd, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args into fs. On -h it prints the flags to out and
// returns flag.ErrHelp; any other failure is one *usageError line that
// shows no value (a value may be a password).
func parseFlags(fs *flag.FlagSet, cmd string, args []string, out io.Writer, bad *badValue) error {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprintf(out, "usage: whatsapp %s [flags]\n\nEvery flag can also be set by the environment variable in brackets; the flag wins.\n\n", cmd)
		fs.SetOutput(out)
		fs.PrintDefaults()
		return err
	case bad.flag != "":
		return &usageError{cmd, bad.name() + ": " + bad.msg}
	case err != nil:
		msg := err.Error()
		if name, ok := strings.CutPrefix(msg, "flag provided but not defined: "); ok {
			msg = "unknown flag " + name
		} else if strings.HasPrefix(msg, "flag needs an argument: ") {
			msg = strings.Replace(msg, "flag needs an argument: ", "missing value for ", 1)
		} else {
			msg = "malformed flag (not shown: it may hold a secret)"
		}
		return &usageError{cmd, fmt.Sprintf("%s; 'whatsapp %s -h' lists the flags", msg, cmd)}
	case fs.NArg() > 0:
		// Not shown: with `-b admin:pw1 ops:pw2`, the stray argument is a
		// password.
		return &usageError{cmd, fmt.Sprintf("unexpected argument after the flags (not shown: it may be a secret); a flag takes one value, and --basic-auth pairs are separated by commas; 'whatsapp %s -h' lists the flags", cmd)}
	}
	return nil
}

// envMessage words an envconfig error without envconfig's or strconv's
// internals; it never shows the value.
func envMessage(err error) string {
	var pe *envconfig.ParseError
	if !errors.As(err, &pe) {
		return "environment: " + err.Error()
	}
	switch pe.FieldName {
	case "Port":
		return pe.KeyName + ": not a port; use 1 to 65535, or 0 for any free port"
	}
	switch pe.TypeName {
	case "time.Duration":
		return pe.KeyName + ": not a duration; write it like 15s, 500ms or 2m"
	case "bool":
		return pe.KeyName + ": not a boolean; use true or false"
	case "int":
		return pe.KeyName + ": not a whole number"
	}
	return pe.KeyName + ": not a valid value"
}

// badValue records the first flag whose value was refused, so that the
// error names the flag as typed and says why in our words.
type badValue struct {
	flag, msg string
}

func (b *badValue) refuse(flag, msg string) error {
	if b.flag == "" {
		b.flag, b.msg = flag, msg
	}
	return errors.New(msg)
}

func (b *badValue) name() string {
	if len(b.flag) == 1 {
		return "-" + b.flag
	}
	return "--" + b.flag
}

// portValue is the --port flag.
type portValue struct {
	p   *int
	bad *badValue
}

func (v *portValue) String() string {
	if v.p == nil {
		return ""
	}
	return strconv.Itoa(*v.p)
}

func (v *portValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return v.bad.refuse("port", "not a port; use 1 to 65535, or 0 for any free port")
	}
	*v.p = n // the range is checked with the environment's value
	return nil
}

// durationValue is a duration flag that refuses negative durations.
type durationValue struct {
	flag string
	d    *time.Duration
	bad  *badValue
}

func (v *durationValue) String() string {
	if v.d == nil {
		return ""
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(s)
	if err != nil {
		return v.bad.refuse(v.flag, "not a duration; write it like 15s, 500ms or 2m")
	}
	if d < 0 {
		return v.bad.refuse(v.flag, "must not be negative")
	}
	*v.d = d
	return nil
}

// boolValue is a boolean flag: --debug, or --debug=false.
type boolValue struct {
	flag string
	b    *bool
	bad  *badValue
}

func (v *boolValue) IsBoolFlag() bool { return true }

func (v *boolValue) String() string {
	if v.b == nil {
		return "false"
	}
	return strconv.FormatBool(*v.b)
}

func (v *boolValue) Set(s string) error {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return v.bad.refuse(v.flag, "not a boolean; use --"+v.flag+" or --"+v.flag+"=false")
	}
	*v.b = b
	return nil
}

// secret is a flag.Value that never shows its value, so that `-h` does not
// print credentials taken from the environment as the flag's default.
type secret struct{ p *string }

func (s secret) String() string { return "" }

func (s secret) Set(v string) error {
	*s.p = v
	return nil
}

// intValue is a whole-number flag.
type intValue struct {
	flag string
	n    *int
	bad  *badValue
}

func (v *intValue) String() string {
	if v.n == nil {
		return ""
	}
	return strconv.Itoa(*v.n)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return v.bad.refuse(v.flag, "not a whole number")
	}
	*v.n = n // the range is checked with the environment's value
	return nil
}
