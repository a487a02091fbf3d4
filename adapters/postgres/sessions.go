package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.mau.fi/whatsmeow/store/sqlstore"
	waLog "go.mau.fi/whatsmeow/util/log"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var _ ports.SessionStore = (*Sessions)(nil)

// FenceCode is the SQLSTATE of a session write refused because another
// replica holds the device's lease (schema/004_sessions.sql, gowa_fence).
const FenceCode = "GW001"

// ErrFenced marks a session write refused by the fence: this replica no
// longer holds the device's lease. Fenced tells one.
var ErrFenced = errors.New("the device is leased to another replica")

// Fenced reports whether err is a session write the fence refused.
func Fenced(err error) bool {
	var pgErr *pgconn.PgError
	return errors.Is(err, ErrFenced) || (errors.As(err, &pgErr) && pgErr.Code == FenceCode)
}

// Sessions is the ports.SessionStore over whatsmeow's tables in the shared
// database: every session, of every replica, is a device of one whatsmeow
// sqlstore.Container (Container), and gowa_sessions records which slot
// each was made for and which device a pairing in progress is.
//
// A pairing is a row with its key; the WhatsApp adapter opens an unpaired
// whatsmeow device for it and records the device's noise key (BindPairing).
// When whatsmeow saves that device after the phone linked it, a trigger
// gives the pairing its JID in the same statement, so that a crash before
// Promote leaves a pairing that Sessions lists and the adapter reopens as
// paired (PairedJID): the device service then promotes it at start-up, as
// it does with a cut-off pairing folder on SQLite.
//
// Unlike the SQLite store, several replicas use one Sessions' tables at
// once; each acts only on the devices it holds the lease of, and the fence
// refuses whatsmeow writes (and Delete) of any other.
type Sessions struct {
	db        *DB
	container *sqlstore.Container
	// Timeout bounds each method of ports.SessionStore, which takes no
	// context (default 30 s).
	Timeout time.Duration

	// importMu guards tables: whatsmeow's tables in copy order, read by
	// the first ImportSession.
	importMu sync.Mutex
	tables   []pgTable
}

// OpenSessions prepares the shared whatsmeow store on db: whatsmeow's
// schema upgrade, then the fence on every whatsmeow table that holds a
// session's rows (gowa_install_fences, idempotent). Replicas starting at
// once take turns. log receives whatsmeow's database logs (nil: none).
//
// The pool needs two connections at least: one holds the lock while
// whatsmeow upgrades on another.
func OpenSessions(ctx context.Context, db *DB, log waLog.Logger) (*Sessions, error) {
	if n := db.Pool.Config().MaxConns; n < 2 {
		return nil, fmt.Errorf("postgres: the session store needs a pool of 2 connections at least, not %d", n)
	}
	container := sqlstore.NewWithDB(db.SQL(), "pgx", log)
	// whatsmeow's upgrade takes no lock of its own: a session-level
	// advisory lock on a connection held aside serializes the replicas'
	// upgrades, which run on the pool's other connections.
	conn, err := db.Pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to PostgreSQL: %w", Unavailable(err))
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, migrationLock); err != nil {
		return nil, fmt.Errorf("lock the schema: %w", Unavailable(err))
	}
	defer func() {
		_, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrationLock)
	}()
	if err := container.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("upgrade whatsmeow's schema: %w", Unavailable(err))
	}
	if _, err := conn.Exec(ctx, `SELECT gowa_install_fences()`); err != nil {
		return nil, fmt.Errorf("install the session fences: %w", Unavailable(err))
	}
	return &Sessions{db: db, container: container}, nil
}

// Container is the whatsmeow store every session lives in, for the
// WhatsApp adapter. It belongs to the DB: closing a client must not close
// it.
func (s *Sessions) Container() *sqlstore.Container { return s.container }

const pairingPrefix = "pairing:"

// jidPattern accepts the companion JIDs whatsmeow writes for phone-number
// and LID accounts, as the SQLite store does (its copy: adapters never
// import each other).
var jidPattern = regexp.MustCompile(`^[0-9]{1,24}(?:\.[0-9]{1,3}:[0-9]{1,5}|:[0-9]{1,5})?@(?:s\.whatsapp\.net|lid)$`)

// pairingName matches the keys NewPairing makes, without the prefix.
var pairingName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}-[0-9a-f]{16}$`)

func validJID(jid string) bool { return jidPattern.MatchString(jid) }

func checkPairingKey(key string) error {
	name, ok := strings.CutPrefix(key, pairingPrefix)
	if !ok || !pairingName.MatchString(name) {
		return domain.Errorf(domain.EINVALID, "%q is not a pairing session of this store", key)
	}
	return nil
}

func (s *Sessions) ctx() (context.Context, context.CancelFunc) {
	d := s.Timeout
	if d <= 0 {
		d = 30 * time.Second
	}
	return context.WithTimeout(context.Background(), d)
}

// NewPairing records a pairing for device id and returns its key,
// pairing:<id>-<16 hex>.
func (s *Sessions) NewPairing(deviceID string) (string, error) {
	if err := domain.ValidateDeviceID(deviceID); err != nil {
		return "", err
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := pairingPrefix + deviceID + "-" + hex.EncodeToString(b[:])
	ctx, cancel := s.ctx()
	defer cancel()
	if _, err := s.db.Pool.Exec(ctx, `INSERT INTO gowa_sessions (key, device_id) VALUES ($1, $2)`, key, deviceID); err != nil {
		return "", fmt.Errorf("record pairing session: %w", Unavailable(err))
	}
	return key, nil
}

// BindPairing records that the pairing key is the unpaired whatsmeow
// device whose noise key hashes (SHA-256 of its private half, as SQL's
// sha256(noise_key)) to noiseHash. The WhatsApp adapter calls it each time
// it opens an unpaired pairing, before the device can pair. A key that is
// not a pairing of this store is an error.
func (s *Sessions) BindPairing(ctx context.Context, key string, noiseHash []byte) error {
	if err := checkPairingKey(key); err != nil {
		return err
	}
	tag, err := s.db.Pool.Exec(ctx, `UPDATE gowa_sessions SET noise_hash = $2, jid = NULL WHERE key = $1`, key, noiseHash)
	if err != nil {
		return fmt.Errorf("bind pairing session: %w", Unavailable(err))
	}
	if tag.RowsAffected() == 0 {
		return domain.Errorf(domain.ENOTFOUND, "no pairing session %q", key)
	}
	return nil
}

// PairedJID returns the JID of the device the pairing key linked, or ""
// while it has not (or its device is gone). A key that is not a pairing of
// this store is an error.
func (s *Sessions) PairedJID(ctx context.Context, key string) (string, error) {
	if err := checkPairingKey(key); err != nil {
		return "", err
	}
	var jid *string
	err := s.db.Pool.QueryRow(ctx, `
		SELECT d.jid FROM gowa_sessions p
		LEFT JOIN whatsmeow_device d ON d.jid = p.jid AND sha256(d.noise_key) = p.noise_hash
		WHERE p.key = $1`, key).Scan(&jid)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", domain.Errorf(domain.ENOTFOUND, "no pairing session %q", key)
	}
	if err != nil {
		return "", fmt.Errorf("read pairing session: %w", Unavailable(err))
	}
	if jid == nil {
		return "", nil
	}
	return *jid, nil
}

// Promote makes the paired device of pairingKey the linked session of jid,
// in one transaction: the pairing row becomes jid's row (its device id
// kept), replacing any earlier one. The device whatsmeow saved must be
// jid's; an older device of jid was deleted when it was saved (see
// gowa_claim_pairing).
func (s *Sessions) Promote(pairingKey, jid string) error {
	if !validJID(jid) {
		return domain.Errorf(domain.EINVALID, "%q is not a companion JID", jid)
	}
	if err := checkPairingKey(pairingKey); err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
		var paired *string
		var held bool
		err := tx.QueryRow(ctx, `
			SELECT p.jid, d.jid IS NOT NULL FROM gowa_sessions p
			LEFT JOIN whatsmeow_device d ON d.jid = p.jid AND sha256(d.noise_key) = p.noise_hash
			WHERE p.key = $1 FOR UPDATE OF p`, pairingKey).Scan(&paired, &held)
		if errors.Is(err, pgx.ErrNoRows) {
			return domain.Errorf(domain.ENOTFOUND, "no pairing session %q", pairingKey)
		}
		if err != nil {
			return err
		}
		if !held {
			return errors.New("the pairing holds no paired session")
		}
		if *paired != jid {
			return fmt.Errorf("the pairing linked %s, not %s", *paired, jid)
		}
		if _, err := tx.Exec(ctx, `DELETE FROM gowa_sessions WHERE key = $1`, jid); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE gowa_sessions SET key = $2, jid = $2, noise_hash = NULL WHERE key = $1`, pairingKey, jid)
		return err
	})
	if err != nil {
		return fmt.Errorf("promote %s: %w", jid, Unavailable(err))
	}
	return nil
}

// Discard deletes the pairing pairingKey and the device it paired, if
// any. A missing one is not an error.
func (s *Sessions) Discard(pairingKey string) error {
	if err := checkPairingKey(pairingKey); err != nil {
		return err
	}
	ctx, cancel := s.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `
			DELETE FROM whatsmeow_device d USING gowa_sessions p
			WHERE p.key = $1 AND d.jid = p.jid AND sha256(d.noise_key) = p.noise_hash`, pairingKey); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM gowa_sessions WHERE key = $1`, pairingKey)
		return err
	})
	if err != nil {
		return fmt.Errorf("discard pairing session: %w", Unavailable(err))
	}
	return nil
}

// Delete deletes jid's session: its whatsmeow device (and with it, by
// whatsmeow's cascades, every row of it) and its row. Deleting a missing
// one is not an error. The fence refuses it unless this replica holds the
// device's lease (or nobody does).
func (s *Sessions) Delete(jid string) error {
	if !validJID(jid) {
		return domain.Errorf(domain.EINVALID, "%q is not a companion JID", jid)
	}
	ctx, cancel := s.ctx()
	defer cancel()
	err := pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM whatsmeow_device WHERE jid = $1`, jid); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM gowa_sessions WHERE key = $1`, jid)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete session %s: %w", jid, fenced(Unavailable(err)))
	}
	return nil
}

// fenced marks a fence refusal with ErrFenced.
func fenced(err error) error {
	if err != nil && Fenced(err) && !errors.Is(err, ErrFenced) {
		return fmt.Errorf("%w: %w", ErrFenced, err)
	}
	return err
}

// Has tells whether jid's linked session is stored, as Sessions lists it
// (a device saved by a pairing not yet promoted is not), without listing
// every session (the device service's Adopt reads one device).
func (s *Sessions) Has(jid string) (bool, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	var ok bool
	err := s.db.Pool.QueryRow(ctx, `
		SELECT EXISTS (SELECT 1 FROM whatsmeow_device d WHERE d.jid = $1 AND NOT EXISTS (
			SELECT 1 FROM gowa_sessions p
			WHERE p.key LIKE 'pairing:%' AND p.jid = d.jid AND p.noise_hash = sha256(d.noise_key)))`, jid).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("find session: %w", Unavailable(err))
	}
	return ok, nil
}

// Pairings lists the pairings of one device as Sessions lists them: those
// made by this replica, or by one whose heartbeat has lapsed (a live other
// replica's pairing is in progress there). Which of this replica's own are
// still in progress only its device service knows: it must leave alone
// those of a device it runs.
func (s *Sessions) Pairings(deviceID string) ([]ports.StoredSession, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, `
		SELECT '', p.key, p.device_id FROM gowa_sessions p
		WHERE p.key LIKE 'pairing:%' AND p.device_id = $1 AND NOT EXISTS (
			SELECT 1 FROM gowa_replicas r
			WHERE r.id = p.maker AND r.id <> current_setting('gowa.holder', true) AND r.expires_at > now())
		ORDER BY p.key`, deviceID)
	if err != nil {
		return nil, fmt.Errorf("list pairings: %w", Unavailable(err))
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ports.StoredSession])
	if err != nil {
		return nil, fmt.Errorf("list pairings: %w", Unavailable(err))
	}
	out := all[:0]
	for _, st := range all {
		if checkPairingKey(st.Key) == nil {
			out = append(out, st)
		}
	}
	return out, nil
}

// Sessions lists the linked sessions, ordered by JID, then the pairings
// cut off (made by this replica, or by one whose heartbeat has lapsed: a
// live replica's pairing is in progress there), ordered by key. A linked
// session is a whatsmeow device of a valid companion JID that no pairing
// claims: one saved by whatsmeow but not yet promoted is listed as its
// pairing. DeviceID is "" for a device gowa has no row of (the device
// service adopts it into a slot named after its JID).
func (s *Sessions) Sessions() ([]ports.StoredSession, error) {
	ctx, cancel := s.ctx()
	defer cancel()
	rows, err := s.db.Pool.Query(ctx, `
		SELECT d.jid, d.jid, coalesce(s.device_id, '') FROM whatsmeow_device d
		LEFT JOIN gowa_sessions s ON s.key = d.jid
		WHERE NOT EXISTS (
			SELECT 1 FROM gowa_sessions p
			WHERE p.key LIKE 'pairing:%' AND p.jid = d.jid AND p.noise_hash = sha256(d.noise_key))
		UNION ALL
		SELECT '', p.key, p.device_id FROM gowa_sessions p
		WHERE p.key LIKE 'pairing:%' AND NOT EXISTS (
			SELECT 1 FROM gowa_replicas r
			WHERE r.id = p.maker AND r.id <> current_setting('gowa.holder', true) AND r.expires_at > now())`)
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", Unavailable(err))
	}
	all, err := pgx.CollectRows(rows, pgx.RowToStructByPos[ports.StoredSession])
	if err != nil {
		return nil, fmt.Errorf("list sessions: %w", Unavailable(err))
	}
	var linked, pairings []ports.StoredSession
	for _, st := range all {
		switch {
		case st.JID != "" && validJID(st.JID):
			linked = append(linked, st)
		case st.JID == "" && checkPairingKey(st.Key) == nil:
			pairings = append(pairings, st)
		}
	}
	byKey := func(a, b ports.StoredSession) int { return strings.Compare(a.Key, b.Key) }
	slices.SortFunc(linked, byKey)
	slices.SortFunc(pairings, byKey)
	return append(linked, pairings...), nil
}
