package main

import (
	"context"
	"errors"
	"io"
	"os"
	"strings"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// migrate moves a storage folder into PostgreSQL (gateway.Migrate): the
// sessions, device slots, event log and webhooks of a gateway on SQLite, for replicas
// that share the database. It prints what it copied and skipped.
func migrate(ctx context.Context, args []string, stdout io.Writer) error {
	from := os.Getenv("APP_STORAGES")
	if from == "" {
		from = defaultStorages
	}
	to := os.Getenv("APP_DB_URI")
	fs := newFlagSet("migrate")
	var bad badValue
	fs.StringVar(&from, "from", from, "the storage `folder` to copy, as the gateway's --storages (APP_STORAGES)")
	fs.StringVar(&to, "to", "", "the PostgreSQL `URI` to copy into, postgres://user:password@host/db, as the replicas' --db (APP_DB_URI)")
	if err := parseFlags(fs, "migrate", args, stdout, &bad); err != nil {
		return err
	}
	if to == "" {
		to = os.Getenv("APP_DB_URI")
	}
	switch {
	case to == "":
		return &usageError{"migrate", "--to is required: the PostgreSQL URI to copy into (or APP_DB_URI)"}
	case gateway.CheckDatabaseURI(to) != nil:
		return &usageError{"migrate", "--to: " + gateway.CheckDatabaseURI(to).Error()}
	case from == "":
		return &usageError{"migrate", "--from: the storage folder must not be empty"}
	}
	_, err := gateway.Migrate(ctx, gateway.MigrateConfig{From: from, To: to, Out: stdout})
	if err != nil {
		// One line, as every error of the command line: pgx lists each
		// address it tried on a line of its own.
		return errors.New("migrate: " + strings.Join(strings.Fields(err.Error()), " "))
	}
	return nil
}
