package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/domain"
)

// PutWebhook implements ports.Webhooks. It notifies WebhooksChannel, so
// that every replica routes the device's events to it.
func (e *Events) PutWebhook(ctx context.Context, w domain.Webhook) error {
	types := []string(w.Events)
	if types == nil {
		types = []string{}
	}
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			INSERT INTO gowa_webhooks (device_id, url, secret, events) VALUES ($1, $2, $3, $4)
			ON CONFLICT (device_id) DO UPDATE SET url = excluded.url, secret = excluded.secret, events = excluded.events`,
			w.DeviceID, w.URL, w.Secret, types); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, WebhooksChannel, w.DeviceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("put webhook of %s: %w", w.DeviceID, Unavailable(err))
	}
	return nil
}

// DeleteWebhook implements ports.Webhooks. It notifies WebhooksChannel.
func (e *Events) DeleteWebhook(ctx context.Context, deviceID string) error {
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM gowa_webhooks WHERE device_id = $1`, deviceID); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, WebhooksChannel, deviceID)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete webhook of %s: %w", deviceID, Unavailable(err))
	}
	return nil
}

// ListWebhooks implements ports.Webhooks.
func (e *Events) ListWebhooks(ctx context.Context) ([]domain.Webhook, error) {
	rows, err := e.db.Pool.Query(ctx, `SELECT device_id, url, secret, events FROM gowa_webhooks ORDER BY device_id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", Unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.Webhook, error) {
		var (
			w     domain.Webhook
			types []string
		)
		err := row.Scan(&w.DeviceID, &w.URL, &w.Secret, &types)
		if len(types) > 0 {
			w.Events = types
		}
		return w, err
	})
	if err != nil {
		return nil, fmt.Errorf("list webhooks: %w", Unavailable(err))
	}
	return out, nil
}
