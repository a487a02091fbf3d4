package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

// healthcheck asks the gateway on this machine for /health and fails
// unless it answers 200. Container images use it as their HEALTHCHECK, so
// they need no curl.
func healthcheck(ctx context.Context, args []string, stderr io.Writer) error {
	port := 3000
	if p, err := strconv.Atoi(os.Getenv("APP_PORT")); err == nil {
		port = p
	}
	fs := flag.NewFlagSet("whatsapp healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&port, "port", port, "the gateway's port (APP_PORT)")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for an answer")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) + "/health"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /health answered %s", resp.Status)
	}
	return nil
}
