package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/kelseyhightower/envconfig"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// SimulatorConfig is the configuration of `whatsapp simulator`: APP_…
// variables first, then flags, which win, as for the gateway.
type SimulatorConfig struct {
	Port  int    `split_words:"true" default:"3100"`
	Host  string `split_words:"true" default:"127.0.0.1"`
	Dir   string `split_words:"true" default:"./storages-simulator"`
	Debug bool   `split_words:"true"`

	names map[string]string // as Config.names
}

func (c SimulatorConfig) name(flag string) string {
	if n, ok := c.names[flag]; ok {
		return n
	}
	return "--" + flag
}

// loadSimulatorConfig reads the environment, then the flags in args.
// Errors are *usageError; -h prints the flags to out and returns
// flag.ErrHelp.
func loadSimulatorConfig(args []string, out io.Writer) (SimulatorConfig, error) {
	const cmd = "simulator"
	cfg := SimulatorConfig{names: map[string]string{}}
	if err := envconfig.Process(envPrefix, &cfg); err != nil {
		return SimulatorConfig{}, &usageError{cmd, envMessage(err)}
	}
	fs := newFlagSet(cmd)
	var bad badValue
	fs.Var(&portValue{&cfg.Port, &bad}, "port", "the `port` to listen on, 1 to 65535; 0 picks a free one (APP_PORT)")
	fs.StringVar(&cfg.Host, "host", cfg.Host, "address to listen on; empty means every interface (APP_HOST)")
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "folder where the simulated world (phones, linked devices, messages, the certificate root) persists (APP_DIR)")
	fs.Var(&boolValue{"debug", &cfg.Debug, &bad}, "debug", "debug logs (APP_DEBUG)")
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := os.LookupEnv(envName(f.Name)); ok {
			cfg.names[f.Name] = envName(f.Name)
		}
	})
	if err := parseFlags(fs, cmd, args, out, &bad); err != nil {
		return SimulatorConfig{}, err
	}
	fs.Visit(func(f *flag.Flag) { cfg.names[f.Name] = "--" + f.Name })
	if cfg.Port < 0 || cfg.Port > 65535 {
		return SimulatorConfig{}, &usageError{cmd, fmt.Sprintf("%s: %d is not a port; use 1 to 65535, or 0 for any free port", cfg.name("port"), cfg.Port)}
	}
	if cfg.Dir == "" {
		return SimulatorConfig{}, &usageError{cmd, cfg.name("dir") + ": must not be empty"}
	}
	return cfg, nil
}

// runSimulator runs `whatsapp simulator` until ctx ends.
func runSimulator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := loadSimulatorConfig(args, stdout)
	if err != nil {
		return err
	}
	logs := newLogWriter(stderr, 100*time.Millisecond)
	defer logs.Close()
	sim, err := gateway.OpenSimulator(gateway.SimulatorConfig{
		Host: cfg.Host, Port: cfg.Port, Dir: cfg.Dir, Debug: cfg.Debug, FlagName: cfg.name,
	}, logs)
	if err != nil {
		return err
	}
	return sim.Run(ctx)
}
