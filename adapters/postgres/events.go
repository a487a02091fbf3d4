package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var (
	_ ports.EventLog = (*Events)(nil)
	_ ports.Outbox   = (*Events)(nil)
	_ ports.Webhooks = (*Events)(nil)
)

// The channels Events notifies on, in the transaction that made the change.
const (
	// EventsChannel carries the last id of each append.
	EventsChannel = "gowa_events"
	// WebhooksChannel carries the device id of each webhook change.
	WebhooksChannel = "gowa_webhooks"
)

// appendLock is the advisory lock that serializes appends across replicas,
// so that event ids commit in increasing order: a reader that read up to
// id n never sees a smaller id appear later.
const appendLock = 0x67_6f_77_65 // "gowe"

// Events is the event log, webhook outbox and device webhook store that
// every replica shares (schema/002_events.sql). Its methods are safe for
// concurrent use. Watch tells a replica when another one changed them.
type Events struct {
	db *DB
	// Backoff bounds the wait between attempts to reconnect Watch's
	// listening connection (default 2 s).
	Backoff time.Duration
	// Logger reports Watch's reconnections (default: discarded).
	Logger *slog.Logger
}

// NewEvents returns the event store on db's pool.
func NewEvents(db *DB) *Events { return &Events{db: db} }

// Append implements ports.EventLog. Times are kept to the microsecond
// (PostgreSQL's precision): the events returned, and the outbox's copies,
// carry the time as stored, so that whoever reads them later reads the
// same. It notifies EventsChannel when it commits.
func (e *Events) Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	out := make([]domain.LiveEvent, len(evs))
	err := pgx.BeginFunc(ctx, e.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, appendLock); err != nil {
			return err
		}
		var last int64
		if err := tx.QueryRow(ctx, `UPDATE gowa_event_last SET id = id + $1 RETURNING id`, len(evs)).Scan(&last); err != nil {
			return err
		}
		first := last - int64(len(evs)) + 1
		evRows := make([][]any, len(evs))
		var outRows [][]any
		for i, ev := range evs {
			ev.ID = first + int64(i)
			ev.Time = ev.Time.Truncate(time.Microsecond).UTC()
			if len(ev.Data) == 0 {
				ev.Data = json.RawMessage("{}")
			}
			out[i] = ev
			evRows[i] = []any{ev.ID, string(ev.Type), ev.DeviceID, ev.Time, string(ev.Data)}
			if route == nil {
				continue
			}
			endpoints := route(ev)
			if len(endpoints) == 0 {
				continue
			}
			body, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			for _, ep := range endpoints {
				outRows = append(outRows, []any{ep, ev.DeviceID, ev.ID, string(ev.Type), body, ev.Time})
			}
		}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"gowa_events"}, []string{"id", "type", "device_id", "time", "data"}, pgx.CopyFromRows(evRows)); err != nil {
			return err
		}
		if len(outRows) > 0 {
			if _, err := tx.CopyFrom(ctx, pgx.Identifier{"gowa_outbox"}, []string{"endpoint", "device_id", "event_id", "type", "body", "created_at"}, pgx.CopyFromRows(outRows)); err != nil {
				return fmt.Errorf("queue deliveries: %w", err)
			}
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, EventsChannel, strconv.FormatInt(last, 10))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("append events: %w", Unavailable(err))
	}
	return out, nil
}

// Read implements ports.EventLog.
func (e *Events) Read(ctx context.Context, after int64, limit int) ([]domain.LiveEvent, error) {
	rows, err := e.db.Pool.Query(ctx, `SELECT id, type, device_id, time, data::text FROM gowa_events WHERE id > $1 ORDER BY id LIMIT $2`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", Unavailable(err))
	}
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (domain.LiveEvent, error) {
		var (
			ev   domain.LiveEvent
			typ  string
			data string
		)
		err := row.Scan(&ev.ID, &typ, &ev.DeviceID, &ev.Time, &data)
		ev.Type = domain.EventType(typ)
		ev.Time = ev.Time.UTC()
		ev.Data = json.RawMessage(data)
		return ev, err
	})
	if err != nil {
		return nil, fmt.Errorf("read events: %w", Unavailable(err))
	}
	return evs, nil
}

// Bounds implements ports.EventLog. last is the last id committed: an
// append still in progress on another replica gets ids above it.
func (e *Events) Bounds(ctx context.Context) (oldest, last int64, err error) {
	var min *int64
	err = e.db.Pool.QueryRow(ctx, `SELECT (SELECT min(id) FROM gowa_events), (SELECT id FROM gowa_event_last)`).Scan(&min, &last)
	if err != nil {
		return 0, 0, fmt.Errorf("event log bounds: %w", Unavailable(err))
	}
	if min != nil {
		oldest = *min
	}
	return oldest, last, nil
}

// Prune implements ports.EventLog. Every replica prunes; they do not get
// in each other's way (a row another deleted is simply not counted).
func (e *Events) Prune(ctx context.Context, before time.Time, keep int) (int64, error) {
	tag, err := e.db.Pool.Exec(ctx, `DELETE FROM gowa_events WHERE time < $1`, before)
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", Unavailable(err))
	}
	n := tag.RowsAffected()
	if keep <= 0 {
		return n, nil
	}
	tag, err = e.db.Pool.Exec(ctx, `DELETE FROM gowa_events WHERE id <= (SELECT id FROM gowa_events ORDER BY id DESC LIMIT 1 OFFSET $1)`, keep)
	if err != nil {
		return n, fmt.Errorf("prune events: %w", Unavailable(err))
	}
	return n + tag.RowsAffected(), nil
}

// Watch listens, on a connection of its own, for changes other replicas
// (and this one) make: appended receives a value after each append
// committed, webhooks after each webhook change. Both also receive one when
// the listening connection is (re)established, since whatever happened
// while it was down was not told. Values are coalesced: a receiver that is
// busy gets one wake-up for many changes, and reads what is new itself.
// When the connection fails, Watch reconnects with a growing wait (up to
// Backoff) until ctx ends; then it closes both channels.
func (e *Events) Watch(ctx context.Context) (appended, webhooks <-chan struct{}) {
	ev, wh := make(chan struct{}, 1), make(chan struct{}, 1)
	go func() {
		defer close(ev)
		defer close(wh)
		maxWait := e.Backoff
		if maxWait <= 0 {
			maxWait = 2 * time.Second
		}
		wait := 50 * time.Millisecond
		for ctx.Err() == nil {
			err := e.listen(ctx, ev, wh, func() { wait = 50 * time.Millisecond })
			if ctx.Err() != nil {
				return
			}
			e.logger().Warn("listening for other replicas' events; reconnecting", "err", err, "in", wait)
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
			wait = min(2*wait, maxWait)
		}
	}()
	return ev, wh
}

func (e *Events) logger() *slog.Logger {
	if e.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return e.Logger
}

// listen holds one listening connection until it fails or ctx ends.
func (e *Events) listen(ctx context.Context, ev, wh chan struct{}, connected func()) error {
	conn, err := pgx.ConnectConfig(ctx, e.db.Pool.Config().ConnConfig.Copy())
	if err != nil {
		return Unavailable(err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, ch := range []string{EventsChannel, WebhooksChannel} {
		if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{ch}.Sanitize()); err != nil {
			return Unavailable(err)
		}
	}
	connected()
	poke(ev)
	poke(wh)
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			if errors.Is(err, context.Canceled) && ctx.Err() != nil {
				return nil
			}
			return Unavailable(err)
		}
		switch n.Channel {
		case EventsChannel:
			poke(ev)
		case WebhooksChannel:
			poke(wh)
		}
	}
}

func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}
