package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// EventSource is an event store to import from: a storage folder's
// events.db (adapters/sqlite), for `whatsapp migrate`.
type EventSource interface {
	ports.EventLog
	ports.Outbox
	ports.Webhooks
}

// Imported counts what ImportFrom copied (what was there already is not
// counted).
type Imported struct {
	Events, Deliveries, Webhooks int
	// Again is set when the log had been imported from the same source
	// before: nothing was copied.
	Again bool
}

// importPage is how many events ImportFrom reads from the source at a
// time.
const importPage = 1000

// ImportFrom copies src's events, keeping their ids (so that a reader's
// Last-Event-ID still means the same event), its pending webhook
// deliveries and its device webhooks into this store, in one transaction
// under the append lock, and sets the last id given to src's, so that no
// id is given twice. Event times keep microseconds.
//
// It copies into a log that has never given an id. A log that has given
// at least src's last id is taken for an earlier import of src: if the
// events it still holds under src's ids are src's, it copies nothing
// (running it again changes nothing, even after the gateways delivered
// and deleted what it copied); otherwise, and when the log has given
// fewer ids than src, it is another gateway's log and ImportFrom refuses
// with ECONFLICT.
func (e *Events) ImportFrom(ctx context.Context, src EventSource) (Imported, error) {
	var n Imported
	_, last, err := src.Bounds(ctx)
	if err != nil {
		return n, fmt.Errorf("import events: read the source: %w", err)
	}
	hooks, err := src.ListWebhooks(ctx)
	if err != nil {
		return n, fmt.Errorf("import events: read the source's webhooks: %w", err)
	}
	depth, err := src.Depth(ctx)
	if err != nil {
		return n, fmt.Errorf("import events: read the source's outbox: %w", err)
	}
	err = pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		n = Imported{}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLock); err != nil {
			return err
		}
		var given int64
		if err := tx.QueryRow(ctx, `SELECT id FROM gowa_event_last`).Scan(&given); err != nil {
			return err
		}
		done := given > 0 && given >= last
		if given > 0 && !done {
			return errOtherLog(given)
		}
		for after := int64(0); ; {
			evs, err := src.Read(ctx, after, importPage)
			if err != nil {
				return fmt.Errorf("read the source: %w", err)
			}
			if len(evs) == 0 {
				break
			}
			added, err := importEvents(ctx, tx, evs, done)
			if err != nil {
				return err
			}
			n.Events += added
			after = evs[len(evs)-1].ID
		}
		if done {
			n.Again = true
			return nil // imported before: the rest may have been delivered, deleted or changed since
		}
		for ep, d := range depth {
			dels, err := src.Pending(ctx, ep, nil, d.Pending)
			if err != nil {
				return fmt.Errorf("read the source's outbox: %w", err)
			}
			for _, d := range dels {
				var next *time.Time
				if !d.NextAt.IsZero() {
					next = &d.NextAt
				}
				tag, err := tx.Exec(ctx, `
					INSERT INTO gowa_outbox (endpoint, device_id, event_id, type, body, attempts, next_at, created_at)
					SELECT $1, $2, $3, $4, $5, $6, $7, $8
					WHERE NOT EXISTS (SELECT 1 FROM gowa_outbox WHERE endpoint = $1 AND event_id = $3)`,
					ep, d.DeviceID, d.EventID, string(d.Type), d.Body, d.Attempts, next, d.CreatedAt)
				if err != nil {
					return fmt.Errorf("copy a delivery: %w", err)
				}
				n.Deliveries += int(tag.RowsAffected())
			}
		}
		for _, w := range hooks {
			types := []string(w.Events)
			if types == nil {
				types = []string{}
			}
			tag, err := tx.Exec(ctx, `INSERT INTO gowa_webhooks (device_id, url, secret, events) VALUES ($1, $2, $3, $4) ON CONFLICT (device_id) DO NOTHING`,
				w.DeviceID, w.URL, w.Secret, types)
			if err != nil {
				return fmt.Errorf("copy a webhook: %w", err)
			}
			n.Webhooks += int(tag.RowsAffected())
		}
		if _, err := tx.Exec(ctx, `UPDATE gowa_event_last SET id = GREATEST(id, $1)`, last); err != nil {
			return err
		}
		if n.Webhooks > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, WebhooksChannel); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, EventsChannel)
		return err
	})
	if err != nil {
		return Imported{}, fmt.Errorf("import events: %w", Unavailable(err))
	}
	return n, nil
}

func errOtherLog(given int64) error {
	return domain.Errorf(domain.ECONFLICT, "the event log in PostgreSQL is another gateway's (it has given ids up to %d): import into a new database", given)
}

// importEvents inserts the events of evs that the log lacks (none when
// checkOnly), after checking that those it has under the same ids are the
// same events.
func importEvents(ctx context.Context, tx pgx.Tx, evs []domain.LiveEvent, checkOnly bool) (int, error) {
	ids := make([]int64, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	rows, err := tx.Query(ctx, `SELECT id, type, device_id, time FROM gowa_events WHERE id = ANY($1)`, ids)
	if err != nil {
		return 0, err
	}
	type key struct {
		typ, dev string
		at       time.Time
	}
	have := map[int64]key{}
	var (
		id int64
		k  key
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &k.typ, &k.dev, &k.at}, func() error {
		have[id] = key{k.typ, k.dev, k.at.UTC()}
		return nil
	})
	if err != nil {
		return 0, err
	}
	var (
		newIDs            []int64
		types, devs, data []string
		times             []time.Time
	)
	for _, ev := range evs {
		at := ev.Time.Truncate(time.Microsecond).UTC()
		if h, ok := have[ev.ID]; ok {
			if h != (key{string(ev.Type), ev.DeviceID, at}) {
				return 0, domain.Errorf(domain.ECONFLICT, "the event log in PostgreSQL holds another event with id %d: it is another gateway's; import into a new database", ev.ID)
			}
			continue
		}
		if checkOnly {
			continue
		}
		raw := ev.Data
		if len(raw) == 0 || !json.Valid(raw) {
			raw = json.RawMessage("{}")
		}
		newIDs = append(newIDs, ev.ID)
		types = append(types, string(ev.Type))
		devs = append(devs, ev.DeviceID)
		times = append(times, at)
		data = append(data, string(raw))
	}
	if len(newIDs) == 0 {
		return 0, nil
	}
	_, err = tx.Exec(ctx, `INSERT INTO gowa_events (id, type, device_id, time, data)
		SELECT id, type, device_id, time, data::json
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS u(id, type, device_id, time, data)`,
		newIDs, types, devs, times, data)
	if err != nil {
		return 0, fmt.Errorf("copy events: %w", err)
	}
	return len(newIDs), nil
}
