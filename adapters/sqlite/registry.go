// Package sqlite keeps gowa's state on disk: the device registry in a small
// SQLite database, and the session folders that hold each WhatsApp
// session's own SQLite database. It uses the pure-Go modernc.org/sqlite
// driver, so the program builds without cgo.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var _ ports.Registry = (*Registry)(nil)

// RegistryFile is the name of the registry database in the storage root.
const RegistryFile = "registry.db"

// migrations build the registry schema. migrations[i] moves a database from
// user_version i to i+1; append new steps, never edit old ones.
var migrations = []string{
	`CREATE TABLE slots (
		id         TEXT NOT NULL PRIMARY KEY,
		jid        TEXT NOT NULL DEFAULT '',
		created_at TEXT NOT NULL
	)`,
	// Why the slot's last session ended, and when: a logged_out device
	// stays logged_out, with its reason, across restarts.
	`ALTER TABLE slots ADD COLUMN ended TEXT NOT NULL DEFAULT ''`,
	`ALTER TABLE slots ADD COLUMN ended_at TEXT NOT NULL DEFAULT ''`,
}

// Registry is the SQLite-backed ports.Registry. Its methods are safe for
// concurrent use.
type Registry struct {
	db *sql.DB
}

// OpenRegistry opens, creating if needed, the registry database at
// root/registry.db and brings its schema up to date. The file is readable by
// its owner only. Close it when done.
func OpenRegistry(root string) (*Registry, error) {
	db, err := openDB(root, RegistryFile, migrations)
	if err != nil {
		return nil, fmt.Errorf("open registry: %w", err)
	}
	return &Registry{db: db}, nil
}

// Close closes the database.
func (r *Registry) Close() error {
	if err := r.db.Close(); err != nil {
		return fmt.Errorf("close registry: %w", err)
	}
	return nil
}

// List returns every slot, ordered by id (byte-wise, as Go orders strings).
func (r *Registry) List(ctx context.Context) ([]domain.Slot, error) {
	rows, err := r.db.QueryContext(ctx, `SELECT id, jid, created_at, ended, ended_at FROM slots ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("list slots: %w", err)
	}
	defer rows.Close()
	var slots []domain.Slot
	for rows.Next() {
		s, err := scanSlot(rows)
		if err != nil {
			return nil, fmt.Errorf("list slots: %w", err)
		}
		slots = append(slots, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list slots: %w", err)
	}
	return slots, nil
}

// Get returns the slot with id, and false when there is none.
func (r *Registry) Get(ctx context.Context, id string) (domain.Slot, bool, error) {
	s, err := scanSlot(r.db.QueryRowContext(ctx, `SELECT id, jid, created_at, ended, ended_at FROM slots WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return domain.Slot{}, false, nil
	}
	if err != nil {
		return domain.Slot{}, false, fmt.Errorf("get slot %s: %w", id, err)
	}
	return s, true, nil
}

// scanSlot reads a row of id, jid, created_at, ended, ended_at.
func scanSlot(row interface{ Scan(...any) error }) (domain.Slot, error) {
	var (
		s                     domain.Slot
		created, ended, endAt string
	)
	if err := row.Scan(&s.ID, &s.JID, &created, &ended, &endAt); err != nil {
		return s, err
	}
	var err error
	if s.CreatedAt, err = time.Parse(time.RFC3339Nano, created); err != nil {
		return s, fmt.Errorf("slot %s: created_at: %w", s.ID, err)
	}
	s.Ended = domain.Reason(ended)
	if endAt != "" {
		if s.EndedAt, err = time.Parse(time.RFC3339Nano, endAt); err != nil {
			return s, fmt.Errorf("slot %s: ended_at: %w", s.ID, err)
		}
	}
	return s, nil
}

// Put creates slot, or replaces the stored slot with the same id.
func (r *Registry) Put(ctx context.Context, slot domain.Slot) error {
	if slot.ID == "" {
		return domain.Errorf(domain.EINVALID, "a slot needs an id")
	}
	// Times are stored as RFC 3339 text in UTC: readable with the sqlite3
	// shell, ordered as text, and able to hold the zero time.
	created := slot.CreatedAt.UTC().Format(time.RFC3339Nano)
	var endedAt string
	if slot.Ended != domain.ReasonNone {
		endedAt = slot.EndedAt.UTC().Format(time.RFC3339Nano)
	}
	_, err := r.db.ExecContext(ctx, `
		INSERT INTO slots (id, jid, created_at, ended, ended_at) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET jid = excluded.jid, created_at = excluded.created_at,
			ended = excluded.ended, ended_at = excluded.ended_at`,
		slot.ID, slot.JID, created, string(slot.Ended), endedAt)
	if err != nil {
		return fmt.Errorf("put slot %s: %w", slot.ID, err)
	}
	return nil
}

// Delete removes the slot with id; a missing slot is not an error.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, err := r.db.ExecContext(ctx, `DELETE FROM slots WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete slot %s: %w", id, err)
	}
	return nil
}
