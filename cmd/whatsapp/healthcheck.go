package main

import (
	"context"
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
func healthcheck(ctx context.Context, args []string, out io.Writer) error {
	port := 3000
	if v, ok := os.LookupEnv("APP_PORT"); ok {
		p, err := strconv.Atoi(v)
		if err != nil || p < 1 || p > 65535 {
			return &usageError{"healthcheck", "APP_PORT: not a port; use 1 to 65535"}
		}
		port = p
	}
	timeout := 3 * time.Second
	fs := newFlagSet("healthcheck")
	var bad badValue
	fs.Var(&portValue{&port, &bad}, "port", "the gateway's `port` (APP_PORT)")
	fs.Var(&durationValue{"timeout", &timeout, &bad}, "timeout", "how long to wait for an answer (a `duration` such as 3s)")
	if err := parseFlags(fs, "healthcheck", args, out, &bad); err != nil {
		return err
	}
	if port < 1 || port > 65535 {
		return &usageError{"healthcheck", fmt.Sprintf("--port: %d is not a port; use 1 to 65535", port)}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
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
