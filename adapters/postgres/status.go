package postgres

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/domain"
)

// Statuses is the status table: each device's status as its holder last
// wrote it, so that any replica can list every device (gowa_device_status,
// schema/010_status.sql).
type Statuses struct {
	db *DB
}

// NewStatuses returns the status table of db.
func NewStatuses(db *DB) *Statuses { return &Statuses{db: db} }

// Put writes sts as this replica's view of those devices. A device whose
// lease another replica holds is skipped: a replica that has handed a
// device over (or lost it) cannot overwrite what the new holder wrote with
// a write that was late.
func (s *Statuses) Put(ctx context.Context, sts ...domain.Status) error {
	if len(sts) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	for _, st := range sts {
		var method string
		var expires *time.Time
		if p := st.Pairing; p != nil {
			// The method and expiry only: QR texts and pairing codes are
			// secrets, and stay on the replica that shows them.
			method, expires = string(p.Method), &p.ExpiresAt
		}
		b.Queue(`
			INSERT INTO gowa_device_status AS s (device_id, state, reason, detail, jid, phone, push_name, platform,
				logged_in, connected, since, pairing_method, pairing_expires_at, holder, updated_at)
			SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, current_setting('gowa.holder'), now()
			WHERE NOT EXISTS (SELECT 1 FROM gowa_leases l WHERE l.device_id = $1 AND l.holder IS DISTINCT FROM current_setting('gowa.holder'))
			ON CONFLICT (device_id) DO UPDATE SET state = excluded.state, reason = excluded.reason, detail = excluded.detail,
				jid = excluded.jid, phone = excluded.phone, push_name = excluded.push_name, platform = excluded.platform,
				logged_in = excluded.logged_in, connected = excluded.connected, since = excluded.since,
				pairing_method = excluded.pairing_method, pairing_expires_at = excluded.pairing_expires_at,
				holder = excluded.holder, updated_at = excluded.updated_at`,
			st.DeviceID, string(st.State), string(st.Reason), st.LastError, st.Identity.JID, st.Identity.Phone,
			st.Identity.PushName, st.Identity.Platform, st.LoggedIn, st.Connected, st.Since.UTC(), method, expires)
	}
	if err := s.db.Pool.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write device status: %w", Unavailable(err))
	}
	return nil
}

// statusQuery lists registered devices with their last written status. A
// device nobody wrote a status for yet shows what its slot says: logged
// out when its last session ended, connecting when it has a session (a
// replica is about to restore it), else disconnected.
const statusQuery = `
	SELECT d.id, d.created_at, COALESCE(d.jid, ''), d.ended, d.ended_at,
		s.state, s.reason, s.detail, s.jid, s.phone, s.push_name, s.platform,
		s.logged_in, s.connected, s.since, s.pairing_method, s.pairing_expires_at
	FROM gowa_devices d LEFT JOIN gowa_device_status s ON s.device_id = d.id`

// List returns every registered device's status, ordered by id.
func (s *Statuses) List(ctx context.Context) ([]domain.Status, error) {
	rows, err := s.db.Pool.Query(ctx, statusQuery+` ORDER BY d.id`)
	if err != nil {
		return nil, fmt.Errorf("list device status: %w", Unavailable(err))
	}
	sts, err := pgx.CollectRows(rows, scanStatus)
	if err != nil {
		return nil, fmt.Errorf("list device status: %w", Unavailable(err))
	}
	return sts, nil
}

// Get returns one registered device's status; found is false when no such
// device is registered.
func (s *Statuses) Get(ctx context.Context, id string) (st domain.Status, found bool, err error) {
	rows, err := s.db.Pool.Query(ctx, statusQuery+` WHERE d.id = $1`, id)
	if err != nil {
		return domain.Status{}, false, fmt.Errorf("read device status: %w", Unavailable(err))
	}
	sts, err := pgx.CollectRows(rows, scanStatus)
	if err != nil {
		return domain.Status{}, false, fmt.Errorf("read device status: %w", Unavailable(err))
	}
	if len(sts) == 0 {
		return domain.Status{}, false, nil
	}
	return sts[0], true, nil
}

func scanStatus(row pgx.CollectableRow) (domain.Status, error) {
	var (
		st                                domain.Status
		slotJID, ended                    string
		endedAt, since, pairingExpires    *time.Time
		state, reason, detail, jid, phone *string
		pushName, platform, pairingMethod *string
		loggedIn, connected               *bool
	)
	if err := row.Scan(&st.DeviceID, &st.CreatedAt, &slotJID, &ended, &endedAt,
		&state, &reason, &detail, &jid, &phone, &pushName, &platform,
		&loggedIn, &connected, &since, &pairingMethod, &pairingExpires); err != nil {
		return domain.Status{}, err
	}
	if state == nil {
		// Nobody wrote a status yet.
		switch {
		case ended != "":
			st.State, st.Reason = domain.StateLoggedOut, domain.Reason(ended)
			if endedAt != nil {
				st.Since = *endedAt
			}
		case slotJID != "":
			st.State, st.LoggedIn = domain.StateConnecting, true
			st.Identity.JID = slotJID
		default:
			st.State = domain.StateDisconnected
		}
		if st.Since.IsZero() {
			st.Since = st.CreatedAt
		}
		return st, nil
	}
	st.State, st.Reason, st.LastError = domain.State(*state), domain.Reason(*reason), *detail
	st.Identity = domain.Identity{JID: *jid, Phone: *phone, PushName: *pushName, Platform: *platform}
	st.LoggedIn, st.Connected, st.Since = *loggedIn, *connected, *since
	if *pairingMethod != "" && pairingExpires != nil {
		st.Pairing = &domain.Pairing{Method: domain.PairingMethod(*pairingMethod), ExpiresAt: *pairingExpires}
	}
	return st, nil
}

// ClusterKey returns the shared key named name, 32 random bytes made by the
// first replica that asks (gowa_cluster_keys). Every replica on the
// database gets the same key.
func (db *DB) ClusterKey(ctx context.Context, name string) ([]byte, error) {
	fresh := make([]byte, 32)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if _, err := db.Pool.Exec(ctx, `INSERT INTO gowa_cluster_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING`, name, fresh); err != nil {
		return nil, fmt.Errorf("make the %s key: %w", name, Unavailable(err))
	}
	var key []byte
	if err := db.Pool.QueryRow(ctx, `SELECT key FROM gowa_cluster_keys WHERE name = $1`, name).Scan(&key); err != nil {
		return nil, fmt.Errorf("read the %s key: %w", name, Unavailable(err))
	}
	return key, nil
}

// StatusWriter writes the status of this replica's devices to the status
// table as they change, off the devices' own goroutines: Mark notes that a
// device changed and returns at once; Run writes the devices marked since
// its last write, each once with its status at that moment, so that a
// burst of transitions costs one write. While the database cannot be
// reached it keeps the marks and tries again.
type StatusWriter struct {
	store *Statuses
	// lookup returns a device's current status here, false when this
	// replica no longer runs it (handed over or deleted: not written).
	lookup func(id string) (domain.Status, bool)
	log    *slog.Logger
	retry  time.Duration

	mu    sync.Mutex
	dirty map[string]struct{}
	wake  chan struct{}
}

// NewStatusWriter returns a writer of store that reads statuses with
// lookup. retry is the wait after a failed write (0: 1 s).
func NewStatusWriter(store *Statuses, lookup func(id string) (domain.Status, bool), log *slog.Logger, retry time.Duration) *StatusWriter {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if retry <= 0 {
		retry = time.Second
	}
	return &StatusWriter{store: store, lookup: lookup, log: log, retry: retry, dirty: map[string]struct{}{}, wake: make(chan struct{}, 1)}
}

// Mark notes that device id changed. It never blocks.
func (w *StatusWriter) Mark(id string) {
	w.mu.Lock()
	w.dirty[id] = struct{}{}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run writes marked devices until ctx ends, then once more (bounded by a
// few seconds) so that the last transitions are written too.
func (w *StatusWriter) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
			_ = w.Flush(fctx)
			cancel()
			return
		case <-w.wake:
		}
		if err := w.Flush(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("writing device status to the shared database; retrying", "err", err)
			t := time.NewTimer(w.retry)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			w.Mark("") // come back for the marks kept
		}
	}
}

// Flush writes the devices marked so far. On failure the marks are kept.
func (w *StatusWriter) Flush(ctx context.Context) error {
	w.mu.Lock()
	ids := w.dirty
	w.dirty = map[string]struct{}{}
	w.mu.Unlock()
	sts := make([]domain.Status, 0, len(ids))
	for id := range ids {
		if id == "" {
			continue
		}
		if st, ok := w.lookup(id); ok {
			sts = append(sts, st)
		}
	}
	err := w.store.Put(ctx, sts...)
	if err != nil {
		w.mu.Lock()
		for id := range ids {
			w.dirty[id] = struct{}{}
		}
		w.mu.Unlock()
	}
	if err != nil && errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
