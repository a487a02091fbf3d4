package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// openDB opens, creating if needed, the database file in root, readable by
// its owner only, and brings its schema up to len(steps). The registry and
// the event log are opened this way.
func openDB(root, file string, steps []string) (*sql.DB, error) {
	if strings.ContainsRune(root, '?') {
		// The driver reads everything after '?' as connection parameters.
		return nil, fmt.Errorf("storage root %q must not contain '?'", root)
	}
	path := filepath.Join(root, file)
	// Create the file ourselves so that SQLite, which gives its -wal and
	// -shm files the database file's mode, never makes anything wider.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	// busy_timeout makes concurrent writers wait instead of failing; WAL
	// lets readers run beside a writer; synchronous NORMAL is durable
	// enough under WAL (a power cut may lose the last commits, a crash of
	// the process loses nothing, nothing is corrupted); immediate
	// transactions take the write lock up front, so a read-then-write
	// transaction cannot fail halfway with SQLITE_BUSY.
	dsn := path + "?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, err
	}
	if err := migrate(context.Background(), db, steps); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return db, nil
}

// migrate applies the steps db has not seen yet, in one transaction, and
// records the new version in user_version.
func migrate(ctx context.Context, db *sql.DB, steps []string) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin migration: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var version int
	if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(steps) {
		return fmt.Errorf("schema version %d is newer than this program knows (%d)", version, len(steps))
	}
	if version == len(steps) {
		return nil
	}
	for i := version; i < len(steps); i++ {
		if _, err := tx.ExecContext(ctx, steps[i]); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", i+1, err)
		}
	}
	// PRAGMA takes no bound parameters; the value is our own integer.
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, len(steps))); err != nil {
		return fmt.Errorf("record schema version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit migration: %w", err)
	}
	return nil
}
