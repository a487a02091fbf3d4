package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var (
	_ ports.EventLog = (*Events)(nil)
	_ ports.Outbox   = (*Events)(nil)
	_ ports.Webhooks = (*Events)(nil)
)

// EventsFile is the name of the event log database in the storage root. It
// is apart from the registry so that a busy event log never makes device
// bookkeeping wait.
const EventsFile = "events.db"

// eventMigrations build the event database; append, never edit.
var eventMigrations = []string{
	`CREATE TABLE events (
		id        INTEGER PRIMARY KEY AUTOINCREMENT,
		type      TEXT NOT NULL,
		device_id TEXT NOT NULL,
		time      INTEGER NOT NULL, -- unix nanoseconds
		data      BLOB NOT NULL
	);
	CREATE INDEX events_time ON events (time);
	CREATE TABLE outbox (
		id         INTEGER PRIMARY KEY AUTOINCREMENT,
		endpoint   TEXT NOT NULL,
		device_id  TEXT NOT NULL,
		event_id   INTEGER NOT NULL,
		type       TEXT NOT NULL,
		body       BLOB NOT NULL,
		attempts   INTEGER NOT NULL DEFAULT 0,
		next_at    INTEGER NOT NULL DEFAULT 0,
		created_at INTEGER NOT NULL
	);
	CREATE INDEX outbox_endpoint ON outbox (endpoint, id);
	CREATE TABLE webhooks (
		device_id TEXT NOT NULL PRIMARY KEY,
		url       TEXT NOT NULL,
		secret    TEXT NOT NULL,
		events    TEXT NOT NULL
	)`,
}

// Events is the SQLite event log, webhook outbox and per-device webhook
// store, in root/events.db. Its methods are safe for concurrent use.
type Events struct {
	db *sql.DB
}

// OpenEvents opens, creating if needed, the event database at
// root/events.db, readable by its owner only (webhook secrets live in it).
func OpenEvents(root string) (*Events, error) {
	db, err := openDB(root, EventsFile, eventMigrations)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	return &Events{db: db}, nil
}

// Close closes the database.
func (e *Events) Close() error {
	if err := e.db.Close(); err != nil {
		return fmt.Errorf("close event log: %w", err)
	}
	return nil
}

// Append implements ports.EventLog.
func (e *Events) Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error) {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	insEv, err := tx.PrepareContext(ctx, `INSERT INTO events (type, device_id, time, data) VALUES (?, ?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	defer insEv.Close()
	insOut, err := tx.PrepareContext(ctx, `INSERT INTO outbox (endpoint, device_id, event_id, type, body, created_at) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	defer insOut.Close()
	out := make([]domain.LiveEvent, len(evs))
	for i, ev := range evs {
		if len(ev.Data) == 0 {
			ev.Data = json.RawMessage("{}")
		}
		res, err := insEv.ExecContext(ctx, string(ev.Type), ev.DeviceID, ev.Time.UnixNano(), []byte(ev.Data))
		if err != nil {
			return nil, fmt.Errorf("append events: %w", err)
		}
		if ev.ID, err = res.LastInsertId(); err != nil {
			return nil, fmt.Errorf("append events: %w", err)
		}
		out[i] = ev
		if route == nil {
			continue
		}
		endpoints := route(ev)
		if len(endpoints) == 0 {
			continue
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return nil, fmt.Errorf("append events: %w", err)
		}
		for _, ep := range endpoints {
			if _, err := insOut.ExecContext(ctx, ep, ev.DeviceID, ev.ID, string(ev.Type), body, ev.Time.UnixNano()); err != nil {
				return nil, fmt.Errorf("queue delivery: %w", err)
			}
		}
	}
	if err := tx.Commit(); err != nil {
		return nil, fmt.Errorf("append events: %w", err)
	}
	return out, nil
}

// Read implements ports.EventLog.
func (e *Events) Read(ctx context.Context, after int64, limit int) ([]domain.LiveEvent, error) {
	rows, err := e.db.QueryContext(ctx, `SELECT id, type, device_id, time, data FROM events WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	var out []domain.LiveEvent
	for rows.Next() {
		var (
			ev   domain.LiveEvent
			typ  string
			nano int64
			data []byte
		)
		if err := rows.Scan(&ev.ID, &typ, &ev.DeviceID, &nano, &data); err != nil {
			return nil, fmt.Errorf("read events: %w", err)
		}
		ev.Type = domain.EventType(typ)
		ev.Time = time.Unix(0, nano).UTC()
		ev.Data = data
		out = append(out, ev)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
}

// Bounds implements ports.EventLog.
func (e *Events) Bounds(ctx context.Context) (oldest, last int64, err error) {
	var min sql.NullInt64
	if err := e.db.QueryRowContext(ctx, `SELECT min(id) FROM events`).Scan(&min); err != nil {
		return 0, 0, fmt.Errorf("event log bounds: %w", err)
	}
	err = e.db.QueryRowContext(ctx, `SELECT seq FROM sqlite_sequence WHERE name = 'events'`).Scan(&last)
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	if err != nil {
		return 0, 0, fmt.Errorf("event log bounds: %w", err)
	}
	return min.Int64, last, nil
}

// Prune implements ports.EventLog.
func (e *Events) Prune(ctx context.Context, before time.Time, keep int) (int64, error) {
	res, err := e.db.ExecContext(ctx, `DELETE FROM events WHERE time < ?`, before.UnixNano())
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	n, _ := res.RowsAffected()
	if keep <= 0 {
		return n, nil
	}
	res, err = e.db.ExecContext(ctx, `DELETE FROM events WHERE id <= (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?)`, keep)
	if err != nil {
		return n, fmt.Errorf("prune events: %w", err)
	}
	m, _ := res.RowsAffected()
	return n + m, nil
}
