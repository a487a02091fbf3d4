package main

import (
	"fmt"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// MinLeaseTTL is the shortest --lease-ttl: a replica renews its leases every
// third of it, and a database round trip under load can take a good part of
// a second.
const MinLeaseTTL = time.Second

// checkCluster checks the settings of several replicas on one PostgreSQL:
// --db is a postgres:// URI, --advertise-url is required with it and is a
// URL the other replicas can reach, and --lease-ttl is at least MinLeaseTTL.
// Errors name the settings as the user gave them and never show the
// database URI, which holds a password.
func checkCluster(cfg *Config) error {
	if cfg.LeaseTTL < MinLeaseTTL {
		return fmt.Errorf("%s: must be at least %s (a replica renews its leases every third of it)", cfg.name("lease-ttl"), MinLeaseTTL)
	}
	if cfg.DbURI == "" {
		if cfg.AdvertiseURL != "" {
			return fmt.Errorf("%s: only used with --db (APP_DB_URI), which is not set", cfg.name("advertise-url"))
		}
		return nil
	}
	if err := gateway.CheckDatabaseURI(cfg.DbURI); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("db"), err)
	}
	if cfg.AdvertiseURL == "" {
		return fmt.Errorf("%s needs --advertise-url (APP_ADVERTISE_URL): the URL the other replicas reach this one at, such as http://10.0.0.5:3000", cfg.name("db"))
	}
	if err := gateway.CheckAdvertiseURL(cfg.AdvertiseURL); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("advertise-url"), err)
	}
	return nil
}
