package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var _ ports.Registry = (*Registry)(nil)

// Registry is the device registry every replica shares (table
// gowa_devices). Its methods are safe for concurrent use. A slot's JID is
// unique: the fencing triggers find a session's device by it.
type Registry struct {
	db *DB
}

// NewRegistry returns the registry on db's pool.
func NewRegistry(db *DB) *Registry { return &Registry{db: db} }

const slotColumns = `id, jid, created_at, ended, ended_at`

// List returns every slot, ordered by id (byte-wise, as Go orders strings).
func (r *Registry) List(ctx context.Context) ([]domain.Slot, error) {
	rows, err := r.db.Pool.Query(ctx, `SELECT `+slotColumns+` FROM gowa_devices ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list slots: %w", Unavailable(err))
	}
	slots, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Slot, error) { return scanSlot(row) })
	if err != nil {
		return nil, fmt.Errorf("list slots: %w", Unavailable(err))
	}
	return slots, nil
}

// Get returns the slot with id, and false when there is none.
func (r *Registry) Get(ctx context.Context, id string) (domain.Slot, bool, error) {
	s, err := scanSlot(r.db.Pool.QueryRow(ctx, `SELECT `+slotColumns+` FROM gowa_devices WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Slot{}, false, nil
	}
	if err != nil {
		return domain.Slot{}, false, fmt.Errorf("get slot %s: %w", id, Unavailable(err))
	}
	return s, true, nil
}

func scanSlot(row pgx.Row) (domain.Slot, error) {
	var (
		s       domain.Slot
		jid     *string
		ended   string
		endedAt *time.Time
	)
	if err := row.Scan(&s.ID, &jid, &s.CreatedAt, &ended, &endedAt); err != nil {
		return s, err
	}
	if jid != nil {
		s.JID = *jid
	}
	s.CreatedAt = s.CreatedAt.UTC()
	s.Ended = domain.Reason(ended)
	if endedAt != nil {
		s.EndedAt = endedAt.UTC()
	}
	return s, nil
}

// Put creates slot, or replaces the stored slot with the same id. Times
// keep microseconds (PostgreSQL's precision). A JID another slot already
// has is ECONFLICT.
func (r *Registry) Put(ctx context.Context, slot domain.Slot) error {
	_, err := r.insert(ctx, "put", slot, `ON CONFLICT (id) DO UPDATE SET jid = excluded.jid,
		created_at = excluded.created_at, ended = excluded.ended, ended_at = excluded.ended_at`)
	return err
}

// Import creates slot unless a slot with its id exists, which it leaves
// as it is (for `whatsapp migrate`: a second run, or a slot the replicas
// made meanwhile, changes nothing). It reports whether it created it. A
// JID another slot already has is ECONFLICT.
func (r *Registry) Import(ctx context.Context, slot domain.Slot) (bool, error) {
	return r.insert(ctx, "import", slot, `ON CONFLICT (id) DO NOTHING`)
}

// insert writes slot with the given conflict clause for its id, and tells
// whether a row was written.
func (r *Registry) insert(ctx context.Context, op string, slot domain.Slot, onConflict string) (bool, error) {
	if slot.ID == "" {
		return false, domain.Errorf(domain.EINVALID, "a slot needs an id")
	}
	var jid *string
	if slot.JID != "" {
		jid = &slot.JID
	}
	var endedAt *time.Time
	if slot.Ended != domain.ReasonNone {
		endedAt = &slot.EndedAt
	}
	tag, err := r.db.Pool.Exec(ctx, `
		INSERT INTO gowa_devices (id, jid, created_at, ended, ended_at) VALUES ($1, $2, $3, $4, $5)
		`+onConflict,
		slot.ID, jid, slot.CreatedAt, string(slot.Ended), endedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return false, domain.Wrap(domain.ECONFLICT, err, "another device is linked to that account")
	}
	if err != nil {
		return false, fmt.Errorf("%s slot %s: %w", op, slot.ID, Unavailable(err))
	}
	return tag.RowsAffected() == 1, nil
}

// Delete removes the slot with id; a missing slot is not an error.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if _, err := r.db.Pool.Exec(ctx, `DELETE FROM gowa_devices WHERE id = $1`, id); err != nil {
		return fmt.Errorf("delete slot %s: %w", id, Unavailable(err))
	}
	return nil
}
