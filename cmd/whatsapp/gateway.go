package main

import (
	"context"
	"io"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// openGateway opens the gateway that cfg describes (see
// cmd/internal/gateway, shared with the benchmarks), logging JSON to
// logOut. It does not serve until Run.
func openGateway(ctx context.Context, cfg Config, sandbox bool, logOut io.Writer) (*gateway.Gateway, error) {
	return openTuned(ctx, cfg, sandbox, logOut, gateway.Tuning{})
}

// openTuned is openGateway with lifetimes shortened, for tests.
func openTuned(ctx context.Context, cfg Config, sandbox bool, logOut io.Writer, tuning gateway.Tuning) (*gateway.Gateway, error) {
	if tuning.BodyTimeout == 0 {
		tuning.BodyTimeout = cfg.BodyTimeout
	}
	return gateway.Open(ctx, gateway.Config{
		Port:           cfg.Port,
		Host:           cfg.Host,
		Storages:       cfg.Storages,
		OS:             cfg.OS,
		Debug:          cfg.Debug,
		BasicAuth:      cfg.BasicAuth,
		BasicAuthFile:  cfg.BasicAuthFile,
		TrustedProxies: cfg.TrustedProxies,
		AllowedHosts:   cfg.AllowedHosts,
		ShutdownGrace:  cfg.ShutdownGrace,
		UI:             cfg.UI,
		Events: gateway.EventsConfig{
			Webhooks:        cfg.Webhook,
			WebhookSecret:   cfg.WebhookSecret,
			WebhookTimeout:  cfg.WebhookTimeout,
			WebhookRetryMax: cfg.WebhookRetryMax,
			Retention:       cfg.EventsRetention,
			MaxEvents:       cfg.EventsMax,
		},
		Cluster: gateway.ClusterConfig{
			DatabaseURI:  cfg.DbURI,
			AdvertiseURL: cfg.AdvertiseURL,
			LeaseTTL:     cfg.LeaseTTL,
		},
		Sandbox:   sandbox,
		Simulator: cfg.Simulator,
		Tuning:    tuning,
		FlagName:  cfg.name,
	}, logOut)
}
