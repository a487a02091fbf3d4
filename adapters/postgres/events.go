package postgres

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

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
// concurrent use. Watch tells a replica when another one changed them; the
// event service is wired to it as a shared log, with deliveries gated to
// one replica:
//
//	appended, hooks := store.Watch(ctx) // ctx: the replica's lifetime
//	hub := events.New(events.Config{
//		Store:   store,
//		Shared:  &events.Shared{Appended: appended, Webhooks: hooks},
//		Deliver: holdsWebhooksLease, // then hub.WakeDispatchers() when it is gained
//	})
type Events struct {
	db *DB
	// Backoff bounds the wait between attempts to reconnect Watch's
	// listening connection (default 2 s).
	Backoff time.Duration
	// Ping is how long Watch's connection may stay silent before it is
	// checked (default 15 s): a connection cut without a word (a network
	// partition) would otherwise wait for TCP keepalive, minutes.
	Ping time.Duration
	// Logger reports Watch's reconnections (default: discarded).
	Logger *slog.Logger
}

// NewEvents returns the event store on db's pool.
func NewEvents(db *DB) *Events { return &Events{db: db} }

// Append implements ports.EventLog. Times are kept to the microsecond
// (PostgreSQL's precision): the events returned, and the outbox's copies,
// carry the time as stored, so that whoever reads them later reads the
// same. It notifies EventsChannel when it commits.
//
// The transaction takes two round trips (begin, lock and number; then
// insert, notify and commit), since the append lock is held from the
// first to the end of the second and bounds how fast every replica
// together can append.
func (e *Events) Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error) {
	if len(evs) == 0 {
		return nil, nil
	}
	conn, err := e.db.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("append events: %w", Unavailable(err))
	}
	// A connection left inside the transaction by a failure is closed by
	// the pool on release rather than reused.
	defer conn.Release()
	var last int64
	begin := &pgx.Batch{}
	begin.Queue(`BEGIN`)
	begin.Queue(`SELECT pg_advisory_xact_lock($1)`, appendLock)
	begin.Queue(`UPDATE gowa_event_last SET id = id + $1 RETURNING id`, len(evs)).QueryRow(func(row pgx.Row) error {
		return row.Scan(&last)
	})
	if err := conn.SendBatch(ctx, begin).Close(); err != nil {
		rollback(conn)
		return nil, fmt.Errorf("append events: %w", Unavailable(err))
	}
	out := make([]domain.LiveEvent, len(evs))
	var (
		ids, outIDs                  = make([]int64, len(evs)), []int64(nil)
		types, devs, data            = make([]string, len(evs)), make([]string, len(evs)), make([]string, len(evs))
		times                        = make([]time.Time, len(evs))
		endpoints, outDevs, outTypes []string
		bodies                       [][]byte
		created                      []time.Time
	)
	first := last - int64(len(evs)) + 1
	for i, ev := range evs {
		ev.ID = first + int64(i)
		ev.Time = ev.Time.Truncate(time.Microsecond).UTC()
		if len(ev.Data) == 0 {
			ev.Data = json.RawMessage("{}")
		}
		out[i] = ev
		ids[i], types[i], devs[i], times[i], data[i] = ev.ID, string(ev.Type), ev.DeviceID, ev.Time, string(ev.Data)
		if route == nil {
			continue
		}
		eps := route(ev)
		if len(eps) == 0 {
			continue
		}
		body, err := json.Marshal(ev)
		if err != nil {
			rollback(conn)
			return nil, fmt.Errorf("append events: %w", err)
		}
		for _, ep := range eps {
			endpoints = append(endpoints, ep)
			outDevs = append(outDevs, ev.DeviceID)
			outIDs = append(outIDs, ev.ID)
			outTypes = append(outTypes, string(ev.Type))
			bodies = append(bodies, body)
			created = append(created, ev.Time)
		}
	}
	commit := &pgx.Batch{}
	commit.Queue(`INSERT INTO gowa_events (id, type, device_id, time, data)
		SELECT id, type, device_id, time, data::json
		FROM unnest($1::bigint[], $2::text[], $3::text[], $4::timestamptz[], $5::text[]) AS u(id, type, device_id, time, data)`,
		ids, types, devs, times, data)
	if len(endpoints) > 0 {
		commit.Queue(`INSERT INTO gowa_outbox (endpoint, device_id, event_id, type, body, created_at)
			SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::bytea[], $6::timestamptz[])`,
			endpoints, outDevs, outIDs, outTypes, bodies, created)
	}
	commit.Queue(`SELECT pg_notify($1, $2)`, EventsChannel, strconv.FormatInt(last, 10))
	commit.Queue(`COMMIT`)
	if err := conn.SendBatch(ctx, commit).Close(); err != nil {
		rollback(conn)
		return nil, fmt.Errorf("append events: %w", Unavailable(err))
	}
	return out, nil
}

// rollback ends a failed transaction on conn, if the connection is still
// there to do it; a connection that cannot is closed on release.
func rollback(conn *pgxpool.Conn) {
	if conn.Conn().IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = conn.Exec(ctx, `ROLLBACK`)
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
	ping := e.Ping
	if ping <= 0 {
		ping = 15 * time.Second
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, ping)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil && wctx.Err() != nil {
			// Silent for a while: make sure the server is still there.
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return Unavailable(err)
			}
			continue
		}
		if err != nil {
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
