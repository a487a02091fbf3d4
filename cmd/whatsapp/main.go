// Command whatsapp is gowa, the WhatsApp multi-device REST gateway.
//
//	whatsapp rest         serve the API (port 3000)
//	whatsapp sandbox      serve the same API on a simulated WhatsApp network
//	whatsapp healthcheck  probe a running gateway's /health (for containers)
//
// Each takes the flags listed by `whatsapp rest -h`; every flag has an
// APP_… environment variable, and the flag wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case errors.Is(err, flag.ErrHelp):
	case err != nil:
		fmt.Fprintln(os.Stderr, "whatsapp:", err)
		os.Exit(1)
	}
}

const usage = `usage: whatsapp <command> [flags]

commands:
  rest         serve the REST API
  sandbox      serve the REST API on a simulated WhatsApp network, with no phone needed
  healthcheck  exit 0 if the gateway on --port answers /health
`

// run runs one command until ctx ends or it fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "rest"
	if len(args) > 0 && args[0] != "" && args[0][0] != '-' {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "rest", "sandbox":
		cfg, err := loadConfig(cmd, args, stderr)
		if err != nil {
			return err
		}
		logs := newLogWriter(stderr, 100*time.Millisecond)
		defer logs.Close()
		g, err := openGateway(ctx, cfg, cmd == "sandbox", logs)
		if err != nil {
			return err
		}
		return g.Run(ctx)
	case "healthcheck":
		return healthcheck(ctx, args, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}
