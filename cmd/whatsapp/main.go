// Command whatsapp is gowa, the WhatsApp multi-device REST gateway.
//
//	whatsapp rest         serve the API (port 3000)
//	whatsapp sandbox      serve the same API on a simulated WhatsApp network
//	whatsapp simulator    run the simulated WhatsApp network alone, for several sandbox gateways
//	whatsapp healthcheck  probe a running gateway's /health (for containers)
//	whatsapp migrate      copy a storage folder into PostgreSQL, for replicas
//	whatsapp version      print the version, commit and Go version
//
// `whatsapp <command> -h` lists a command's flags; every flag has an APP_…
// environment variable, and the flag wins. A mistake in the command line
// or the environment is one line on stderr and exit status 2; a failure at
// run time is exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}

// report prints err in one line and returns the exit status: 0 for none
// (or a help request), 2 for a usage error, 1 for anything else.
func report(err error, stderr io.Writer) int {
	var usage *usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errNoCommand):
		return 2 // the usage is printed already
	case errors.As(err, &usage):
		prog := "whatsapp"
		if usage.cmd != "" {
			prog += " " + usage.cmd
		}
		fmt.Fprintf(stderr, "%s: %s\n", prog, usage.msg)
		return 2
	default:
		fmt.Fprintln(stderr, "whatsapp:", err)
		return 1
	}
}

const usage = `usage: whatsapp <command> [flags]

commands:
  rest         serve the REST API (port 3000, sessions under ./storages)
  sandbox      serve the same API on a simulated WhatsApp network: no phone needed
  simulator    run the simulated WhatsApp network on its own (port 3100), for
               several 'whatsapp sandbox --simulator http://127.0.0.1:3100'
  healthcheck  exit 0 if the gateway on this machine answers /health (for containers)
  migrate      copy a storage folder (sessions, devices, event log, webhooks) into PostgreSQL: --from ./storages --to postgres://…
  version      print the version, commit and Go version

'whatsapp <command> -h' lists a command's flags.
`

// errNoCommand is a command line without a command: the usage is printed
// and the process exits 2 rather than start an open gateway unasked.
var errNoCommand = errors.New("no command")

// plainWord is what an unknown command may look like to be repeated in the
// error; anything else might be a password typed in the wrong place.
var plainWord = regexp.MustCompile(`^[a-z][a-z0-9-]{0,19}$`)

// run runs the command in args until ctx ends or it fails.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errNoCommand
	}
	cmd, args := args[0], args[1:]
	switch cmd {
	case "rest", "sandbox":
		cfg, err := loadConfig(cmd, args, stdout)
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
	case "simulator":
		return runSimulator(ctx, args, stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, args, stdout)
	case "migrate":
		return migrate(ctx, args, stdout)
	case "version":
		if len(args) > 0 {
			return &usageError{"version", "takes no arguments"}
		}
		return printVersion(stdout)
	case "help", "-h", "-help", "--help":
		if len(args) > 0 && (args[0] == "rest" || args[0] == "sandbox" || args[0] == "simulator" || args[0] == "healthcheck" || args[0] == "migrate") {
			return run(ctx, []string{args[0], "-h"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	}
	if cmd != "" && cmd[0] == '-' {
		return &usageError{"", "the command comes first, then its flags, as in 'whatsapp rest --port 3000'; 'whatsapp -h' lists the commands"}
	}
	if plainWord.MatchString(cmd) {
		return &usageError{"", fmt.Sprintf("unknown command %q; 'whatsapp -h' lists the commands", cmd)}
	}
	return &usageError{"", "unknown command (not shown: it may be a secret); 'whatsapp -h' lists the commands"}
}
