package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/ports"
)

// Leases implements ports.Leases on the shared database, as the replica the
// DB was opened for. Every time is the database's (now()), so replicas
// whose clocks disagree still agree on who holds what; the local clock only
// paces renewals (domain/cluster).
//
// A lease row stays once written: releasing it clears its holder, and a
// new acquisition takes a new token from the sequence gowa_lease_token.
type Leases struct {
	db *DB
}

var _ ports.Leases = (*Leases)(nil)

// NewLeases returns the leases of the replica db was opened for.
func NewLeases(db *DB) *Leases { return &Leases{db: db} }

// Self is this replica's id.
func (l *Leases) Self() string { return l.db.holder }

// micros is ttl as whole microseconds, PostgreSQL's interval resolution.
func micros(ttl time.Duration) int64 { return ttl.Microseconds() }

// Heartbeat records this replica as alive until ttl from now, at addr. It
// also forgets replicas dead for more than an hour, so that the table does
// not grow with every restart (their ids are new each time).
func (l *Leases) Heartbeat(ctx context.Context, addr string, ttl time.Duration) error {
	_, err := l.db.Pool.Exec(ctx, `
		WITH gone AS (DELETE FROM gowa_replicas WHERE expires_at < now() - interval '1 hour' AND id <> $1)
		INSERT INTO gowa_replicas (id, addr, expires_at)
		VALUES ($1, $2, now() + $3 * interval '1 microsecond')
		ON CONFLICT (id) DO UPDATE SET addr = EXCLUDED.addr, expires_at = EXCLUDED.expires_at`,
		l.db.holder, addr, micros(ttl))
	if err != nil {
		return fmt.Errorf("heartbeat: %w", Unavailable(err))
	}
	return nil
}

// Leave removes this replica from the live ones. Its leases are left as
// they are: the coordinator releases them first, device by device, once
// each device has stopped.
func (l *Leases) Leave(ctx context.Context) error {
	if _, err := l.db.Pool.Exec(ctx, `DELETE FROM gowa_replicas WHERE id = $1`, l.db.holder); err != nil {
		return fmt.Errorf("leave: %w", Unavailable(err))
	}
	return nil
}

// Replicas lists the live replicas, ordered by id.
func (l *Leases) Replicas(ctx context.Context) ([]ports.Replica, error) {
	rows, err := l.db.Pool.Query(ctx, `SELECT id, addr, expires_at FROM gowa_replicas WHERE expires_at >= now() ORDER BY id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", Unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ports.Replica, error) {
		var rp ports.Replica
		err := r.Scan(&rp.ID, &rp.Addr, &rp.Expires)
		return rp, err
	})
	if err != nil {
		return nil, fmt.Errorf("list replicas: %w", Unavailable(err))
	}
	return out, nil
}

// acquireSQL takes or renews one lease in one statement: the row lock of
// ON CONFLICT serializes racing replicas, and its WHERE lets through only a
// free, lapsed or own lease. A new acquisition (anything but renewing a
// live lease of ours) takes a new token. It returns no row when another
// replica holds a live lease.
const acquireSQL = `
WITH up AS (
	INSERT INTO gowa_leases AS l (device_id, holder, token, expires_at)
	VALUES ($1, $2, nextval('gowa_lease_token'), now() + $3 * interval '1 microsecond')
	ON CONFLICT (device_id) DO UPDATE SET
		holder = EXCLUDED.holder,
		token = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at >= now() THEN l.token ELSE EXCLUDED.token END,
		expires_at = EXCLUDED.expires_at
	WHERE l.holder IS NULL OR l.expires_at < now() OR l.holder = EXCLUDED.holder
	RETURNING device_id, token, expires_at
)
SELECT up.device_id, up.token, up.expires_at, COALESCE(r.addr, '')
FROM up LEFT JOIN gowa_replicas r ON r.id = $2`

// Acquire takes deviceID's lease for ttl when it is free or lapsed, or
// renews it when this replica holds it. When another replica holds it, the
// lease is read again to say who: in a statement of its own, since the
// acquiring one may have waited for that replica's acquisition, which its
// snapshot does not show.
func (l *Leases) Acquire(ctx context.Context, deviceID string, ttl time.Duration) (ports.Lease, bool, error) {
	lease := ports.Lease{Holder: l.db.holder}
	err := l.db.Pool.QueryRow(ctx, acquireSQL, deviceID, l.db.holder, micros(ttl)).
		Scan(&lease.DeviceID, &lease.Token, &lease.Expires, &lease.Addr)
	if errors.Is(err, pgx.ErrNoRows) {
		lease, _, err = l.Owner(ctx, deviceID)
		return lease, false, err
	}
	if err != nil {
		return ports.Lease{}, false, fmt.Errorf("acquire the lease of %s: %w", deviceID, Unavailable(err))
	}
	return lease, true, nil
}

// Renew extends every live lease this replica holds to ttl from now and
// returns their device ids, ordered. A lease that lapsed is not renewed,
// even if nobody took it yet: it is lost, and taken again (with a new
// token) only by Acquire, once its device was stopped here.
func (l *Leases) Renew(ctx context.Context, ttl time.Duration) ([]string, error) {
	rows, err := l.db.Pool.Query(ctx, `
		WITH up AS (
			UPDATE gowa_leases SET expires_at = now() + $2 * interval '1 microsecond'
			WHERE holder = $1 AND expires_at >= now()
			RETURNING device_id
		)
		SELECT device_id FROM up ORDER BY device_id COLLATE "C"`, l.db.holder, micros(ttl))
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", Unavailable(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("renew leases: %w", Unavailable(err))
	}
	return ids, nil
}

// Release gives up this replica's leases of deviceIDs; the others are left
// alone.
func (l *Leases) Release(ctx context.Context, deviceIDs ...string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	_, err := l.db.Pool.Exec(ctx, `
		UPDATE gowa_leases SET holder = NULL, expires_at = now()
		WHERE holder = $1 AND device_id = ANY($2)`, l.db.holder, deviceIDs)
	if err != nil {
		return fmt.Errorf("release leases: %w", Unavailable(err))
	}
	return nil
}

// Owner returns deviceID's lease, and whether it is live. A device never
// leased has the zero lease (with its id).
func (l *Leases) Owner(ctx context.Context, deviceID string) (ports.Lease, bool, error) {
	var (
		lease  = ports.Lease{DeviceID: deviceID}
		holder *string
		live   bool
	)
	err := l.db.Pool.QueryRow(ctx, `
		SELECT l.holder, COALESCE(r.addr, ''), l.token, l.expires_at, l.holder IS NOT NULL AND l.expires_at >= now()
		FROM gowa_leases l LEFT JOIN gowa_replicas r ON r.id = l.holder
		WHERE l.device_id = $1`, deviceID).Scan(&holder, &lease.Addr, &lease.Token, &lease.Expires, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return lease, false, nil
	}
	if err != nil {
		return ports.Lease{}, false, fmt.Errorf("read the lease of %s: %w", deviceID, Unavailable(err))
	}
	if holder != nil {
		lease.Holder = *holder
	}
	return lease, live, nil
}

// Leases lists every live lease, ordered by device id.
func (l *Leases) Leases(ctx context.Context) ([]ports.Lease, error) {
	rows, err := l.db.Pool.Query(ctx, `
		SELECT l.device_id, l.holder, COALESCE(r.addr, ''), l.token, l.expires_at
		FROM gowa_leases l LEFT JOIN gowa_replicas r ON r.id = l.holder
		WHERE l.holder IS NOT NULL AND l.expires_at >= now()
		ORDER BY l.device_id COLLATE "C"`)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", Unavailable(err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ports.Lease, error) {
		var ls ports.Lease
		err := r.Scan(&ls.DeviceID, &ls.Holder, &ls.Addr, &ls.Token, &ls.Expires)
		return ls, err
	})
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", Unavailable(err))
	}
	return out, nil
}

// Unowned lists the registered devices, and the webhooks pseudo-device,
// whose lease is free or lapsed, ordered by id.
func (l *Leases) Unowned(ctx context.Context) ([]string, error) {
	rows, err := l.db.Pool.Query(ctx, `
		SELECT id FROM (
			SELECT id FROM gowa_devices
			UNION ALL
			SELECT $1::text
		) d
		WHERE NOT EXISTS (
			SELECT 1 FROM gowa_leases l
			WHERE l.device_id = d.id AND l.holder IS NOT NULL AND l.expires_at >= now()
		)
		ORDER BY id COLLATE "C"`, ports.WebhooksLease)
	if err != nil {
		return nil, fmt.Errorf("list unowned devices: %w", Unavailable(err))
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list unowned devices: %w", Unavailable(err))
	}
	return ids, nil
}

// placementChannel is the NOTIFY channel that wakes the replicas'
// placement: a replica joined, handed devices off, or is leaving.
const placementChannel = "gowa_placement"

// NotifyPlacement wakes the placement of every other replica listening
// (ListenPlacement): domain/cluster's Config.Notify.
func (l *Leases) NotifyPlacement(ctx context.Context) error {
	if _, err := l.db.Pool.Exec(ctx, `SELECT pg_notify($1, $2)`, placementChannel, l.db.holder); err != nil {
		return fmt.Errorf("notify placement: %w", Unavailable(err))
	}
	return nil
}

// ListenPlacement sends on wake (without blocking: one pending wake-up is
// enough) whenever another replica calls NotifyPlacement, until ctx ends;
// domain/cluster's Config.Wake. It holds one connection of the pool, and
// connects again, a second apart, when it is lost. It returns when ctx
// ends.
func (l *Leases) ListenPlacement(ctx context.Context, wake chan<- struct{}) {
	for {
		_ = l.listen(ctx, wake)
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		// Notifications sent while no connection listened are lost: wake
		// up once, in case.
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}

func (l *Leases) listen(ctx context.Context, wake chan<- struct{}) error {
	pc, err := l.db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection leaves the pool: a listening connection must not be
	// handed to anyone else.
	conn := pc.Hijack()
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+placementChannel); err != nil {
		return err
	}
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload == l.db.holder {
			continue
		}
		select {
		case wake <- struct{}{}:
		default:
		}
	}
}
