// Package postgres keeps gowa's state in PostgreSQL, for several replicas
// that share one database: the device registry, whatsmeow's sessions, the
// event log and webhook outbox, and the leases that give each device to
// exactly one replica. It talks to PostgreSQL through pgx v5, pure Go.
//
// One DB is one replica's connection pool. Every connection carries the
// replica's id in the setting gowa.holder, which the fencing triggers read
// (see schema/).
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/gowa-dev/gowa/ports"
)

// schema holds the migrations, applied in the order of their names, each
// once: NNN_what.sql. Never edit one that has shipped; add the next.
//
//go:embed schema/*.sql
var schema embed.FS

// Options configures Open.
type Options struct {
	// Holder is this replica's id, set on every connection as gowa.holder.
	// Required.
	Holder string
	// MaxConns bounds the pool (default 16).
	MaxConns int32
}

// DB is one replica's pool on the shared database.
type DB struct {
	Pool   *pgxpool.Pool
	holder string
	sqlDB  *sql.DB
}

// Open connects to uri (postgres://…), migrates the schema and returns the
// pool. Nothing is left open when it fails.
func Open(ctx context.Context, uri string, opts Options) (*DB, error) {
	if opts.Holder == "" {
		return nil, errors.New("postgres: a replica id is required")
	}
	cfg, err := pgxpool.ParseConfig(uri)
	if err != nil {
		return nil, fmt.Errorf("database URI: %w", redact(err))
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 16
	}
	cfg.ConnConfig.RuntimeParams["gowa.holder"] = opts.Holder
	cfg.ConnConfig.RuntimeParams["application_name"] = "gowa " + opts.Holder
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", redact(err))
	}
	db := &DB{Pool: pool, holder: opts.Holder}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// Holder is the replica id the pool acts as.
func (db *DB) Holder() string { return db.holder }

// SQL returns a database/sql handle on the same pool, for whatsmeow's
// sqlstore (dialect "pgx").
func (db *DB) SQL() *sql.DB {
	if db.sqlDB == nil {
		db.sqlDB = stdlib.OpenDBFromPool(db.Pool)
	}
	return db.sqlDB
}

// Close closes the pool.
func (db *DB) Close() {
	if db.sqlDB != nil {
		_ = db.sqlDB.Close()
	}
	db.Pool.Close()
}

// migrationLock is the advisory lock that serializes migrations of
// replicas starting at once.
const migrationLock = 0x67_6f_77_61 // "gowa"

func (db *DB) migrate(ctx context.Context) error {
	names, err := fs.Glob(schema, "schema/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("connect to PostgreSQL: %w", Unavailable(err))
	}
	defer conn.Release()
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("lock the schema: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS gowa_schema (name TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())`); err != nil {
			return fmt.Errorf("create gowa_schema: %w", err)
		}
		for _, name := range names {
			base := strings.TrimPrefix(name, "schema/")
			var done bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM gowa_schema WHERE name = $1)`, base).Scan(&done); err != nil {
				return fmt.Errorf("read gowa_schema: %w", err)
			}
			if done {
				continue
			}
			body, err := schema.ReadFile(name)
			if err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, string(body)); err != nil {
				return fmt.Errorf("migrate %s: %w", base, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO gowa_schema (name) VALUES ($1)`, base); err != nil {
				return fmt.Errorf("record %s: %w", base, err)
			}
		}
		return nil
	})
}

// Unavailable wraps err with ports.ErrStoreUnavailable when it says the
// database could not be reached (as opposed to refusing a statement).
func Unavailable(err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		// Class 08 (connection exception) and 57P01-57P03 (shutting down,
		// cannot connect now) are the server going away.
		if strings.HasPrefix(pgErr.Code, "08") || pgErr.Code == "57P01" || pgErr.Code == "57P02" || pgErr.Code == "57P03" {
			return fmt.Errorf("%w: %w", ports.ErrStoreUnavailable, err)
		}
		return err
	}
	var netErr net.Error
	if errors.As(err, &netErr) || pgconn.SafeToRetry(err) || errors.Is(err, context.DeadlineExceeded) || isConnectError(err) {
		return fmt.Errorf("%w: %w", ports.ErrStoreUnavailable, err)
	}
	return err
}

func isConnectError(err error) bool {
	var ce *pgconn.ConnectError
	return errors.As(err, &ce)
}

// redact keeps a password in a URI out of an error message: pgx's parse
// errors quote the URI.
func redact(err error) error {
	return errors.New(passwordPattern(err.Error()))
}

func passwordPattern(s string) string {
	// postgres://user:password@host → postgres://user:xxxxx@host
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		i := strings.Index(s, scheme)
		if i < 0 {
			continue
		}
		rest := s[i+len(scheme):]
		at := strings.IndexByte(rest, '@')
		colon := strings.IndexByte(rest, ':')
		if at > 0 && colon >= 0 && colon < at {
			s = s[:i+len(scheme)+colon+1] + "xxxxx" + rest[at:]
		}
	}
	return s
}
