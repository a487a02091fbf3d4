package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Pending implements ports.Outbox.
func (e *Events) Pending(ctx context.Context, endpoint string, skip []string, limit int) ([]domain.Delivery, error) {
	if skip == nil {
		skip = []string{} // <> ALL(NULL) would match nothing
	}
	rows, err := e.db.Pool.Query(ctx, `
		SELECT id, device_id, event_id, type, body, attempts, next_at, created_at FROM gowa_outbox
		WHERE endpoint = $1 AND device_id <> ALL($2) ORDER BY id LIMIT $3`, endpoint, skip, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", Unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Delivery, error) {
		d := domain.Delivery{Endpoint: endpoint}
		var (
			typ  string
			next *time.Time
		)
		err := row.Scan(&d.ID, &d.DeviceID, &d.EventID, &typ, &d.Body, &d.Attempts, &next, &d.CreatedAt)
		d.Type = domain.EventType(typ)
		if next != nil {
			d.NextAt = *next
		}
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", Unavailable(err))
	}
	return out, nil
}

// Done implements ports.Outbox.
func (e *Events) Done(ctx context.Context, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	if _, err := e.db.Pool.Exec(ctx, `DELETE FROM gowa_outbox WHERE id = ANY($1)`, ids); err != nil {
		return fmt.Errorf("outbox done: %w", Unavailable(err))
	}
	return nil
}

// Retry implements ports.Outbox.
func (e *Events) Retry(ctx context.Context, id int64, attempts int, next time.Time) error {
	if _, err := e.db.Pool.Exec(ctx, `UPDATE gowa_outbox SET attempts = $1, next_at = $2 WHERE id = $3`, attempts, next, id); err != nil {
		return fmt.Errorf("outbox retry: %w", Unavailable(err))
	}
	return nil
}

// Depth implements ports.Outbox.
func (e *Events) Depth(ctx context.Context) (map[string]ports.OutboxDepth, error) {
	rows, err := e.db.Pool.Query(ctx, `SELECT endpoint, count(*), min(created_at) FROM gowa_outbox GROUP BY endpoint`)
	if err != nil {
		return nil, fmt.Errorf("outbox depth: %w", Unavailable(err))
	}
	defer rows.Close()
	out := map[string]ports.OutboxDepth{}
	for rows.Next() {
		var (
			ep string
			d  ports.OutboxDepth
		)
		if err := rows.Scan(&ep, &d.Pending, &d.Oldest); err != nil {
			return nil, fmt.Errorf("outbox depth: %w", err)
		}
		out[ep] = d
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("outbox depth: %w", Unavailable(err))
	}
	return out, nil
}

// DropEndpoint implements ports.Outbox.
func (e *Events) DropEndpoint(ctx context.Context, endpoint string) error {
	if _, err := e.db.Pool.Exec(ctx, `DELETE FROM gowa_outbox WHERE endpoint = $1`, endpoint); err != nil {
		return fmt.Errorf("drop outbox of %s: %w", endpoint, Unavailable(err))
	}
	return nil
}
