package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Pending implements ports.Outbox.
func (e *Events) Pending(ctx context.Context, endpoint string, skip []string, limit int) ([]domain.Delivery, error) {
	q := `SELECT id, device_id, event_id, type, body, attempts, next_at, created_at FROM outbox WHERE endpoint = ?`
	args := []any{endpoint}
	if len(skip) > 0 {
		q += ` AND device_id NOT IN (?` + strings.Repeat(`, ?`, len(skip)-1) + `)`
		for _, d := range skip {
			args = append(args, d)
		}
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, limit)
	rows, err := e.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []domain.Delivery
	for rows.Next() {
		d := domain.Delivery{Endpoint: endpoint}
		var (
			typ           string
			next, created int64
		)
		if err := rows.Scan(&d.ID, &d.DeviceID, &d.EventID, &typ, &d.Body, &d.Attempts, &next, &created); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		d.Type = domain.EventType(typ)
		if next != 0 {
			d.NextAt = time.Unix(0, next)
		}
		d.CreatedAt = time.Unix(0, created)
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	return out, nil
}

// Done implements ports.Outbox.
func (e *Events) Done(ctx context.Context, ids ...int64) error {
	if len(ids) == 0 {
		return nil
	}
	args := make([]any, len(ids))
	for i, id := range ids {
		args[i] = id
	}
	q := `DELETE FROM outbox WHERE id IN (?` + strings.Repeat(`, ?`, len(ids)-1) + `)`
	if _, err := e.db.ExecContext(ctx, q, args...); err != nil {
		return fmt.Errorf("outbox done: %w", err)
	}
	return nil
}

// Retry implements ports.Outbox.
func (e *Events) Retry(ctx context.Context, id int64, attempts int, next time.Time) error {
	if _, err := e.db.ExecContext(ctx, `UPDATE outbox SET attempts = ?, next_at = ? WHERE id = ?`, attempts, next.UnixNano(), id); err != nil {
		return fmt.Errorf("outbox retry: %w", err)
	}
	return nil
}

// Depth implements ports.Outbox.
func (e *Events) Depth(ctx context.Context) (map[string]ports.OutboxDepth, error) {
	rows, err := e.db.QueryContext(ctx, `SELECT endpoint, count(*), min(created_at) FROM outbox GROUP BY endpoint`)
	if err != nil {
		return nil, fmt.Errorf("outbox depth: %w", err)
	}
	defer rows.Close()
	out := map[string]ports.OutboxDepth{}
	for rows.Next() {
		var (
			ep     string
			n      int
			oldest int64
		)
		if err := rows.Scan(&ep, &n, &oldest); err != nil {
			return nil, fmt.Errorf("outbox depth: %w", err)
		}
		out[ep] = ports.OutboxDepth{Pending: n, Oldest: time.Unix(0, oldest)}
	}
	return out, rows.Err()
}

// DropEndpoint implements ports.Outbox.
func (e *Events) DropEndpoint(ctx context.Context, endpoint string) error {
	if _, err := e.db.ExecContext(ctx, `DELETE FROM outbox WHERE endpoint = ?`, endpoint); err != nil {
		return fmt.Errorf("drop outbox of %s: %w", endpoint, err)
	}
	return nil
}

// PutWebhook implements ports.Webhooks.
func (e *Events) PutWebhook(ctx context.Context, w domain.Webhook) error {
	types, err := json.Marshal([]string(w.Events))
	if err != nil {
		return fmt.Errorf("put webhook: %w", err)
	}
	_, err = e.db.ExecContext(ctx, `
		INSERT INTO webhooks (device_id, url, secret, events) VALUES (?, ?, ?, ?)
		ON CONFLICT (device_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events`,
		w.DeviceID, w.URL, w.Secret, string(types))
	if err != nil {
		return fmt.Errorf("put webhook of %s: %w", w.DeviceID, err)
	}
	return nil
}

// DeleteWebhook implements ports.Webhooks.
func (e *Events) DeleteWebhook(ctx context.Context, deviceID string) error {
	if _, err := e.db.ExecContext(ctx, `DELETE FROM webhooks WHERE device_id = ?`, deviceID); err != nil {
		return fmt.Errorf("delete webhook of %s: %w", deviceID, err)
	}
	return nil
}

// ListWebhooks implements ports.Webhooks.
func (e *Events) ListWebhooks(ctx context.Context) ([]domain.Webhook, error) {
	rows, err := e.db.QueryContext(ctx, `SELECT device_id, url, secret, events FROM webhooks ORDER BY device_id`)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", err)
	}
	defer rows.Close()
	var out []domain.Webhook
	for rows.Next() {
		var (
			w     domain.Webhook
			types string
		)
		if err := rows.Scan(&w.DeviceID, &w.URL, &w.Secret, &types); err != nil {
			return nil, fmt.Errorf("list webhooks: %w", err)
		}
		if err := json.Unmarshal([]byte(types), (*[]string)(&w.Events)); err != nil {
			return nil, fmt.Errorf("list webhooks: %s: %w", w.DeviceID, err)
		}
		out = append(out, w)
	}
	return out, rows.Err()
}
