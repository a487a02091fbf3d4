package wasim

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"
	_ "modernc.org/sqlite" // the pure-Go "sqlite" driver
)

// dsnPragmas are the settings of every file database: whatsmeow's sqlstore
// refuses to run without foreign keys, and WAL with normal sync keeps the
// 812-key prekey upload fast.
const dsnPragmas = "_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)&_pragma=journal_mode(wal)&_pragma=synchronous(normal)"

const schema = `
CREATE TABLE IF NOT EXISTS wasim_account (
	phone       TEXT PRIMARY KEY,
	push_name   TEXT NOT NULL,
	lid_user    TEXT NOT NULL,
	identity    BLOB NOT NULL, -- private half of the Curve25519 identity key
	next_device INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wasim_device (
	jid       TEXT PRIMARY KEY,
	phone     TEXT NOT NULL REFERENCES wasim_account(phone),
	lid       TEXT NOT NULL,
	noise_key BLOB NOT NULL,
	identity  BLOB NOT NULL,
	reg_id    INTEGER NOT NULL,
	skey_id   INTEGER NOT NULL,
	skey_pub  BLOB NOT NULL,
	skey_sig  BLOB NOT NULL,
	removed   INTEGER NOT NULL DEFAULT 0,
	linked_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS wasim_prekey (
	device TEXT NOT NULL REFERENCES wasim_device(jid) ON DELETE CASCADE,
	id     INTEGER NOT NULL,
	pub    BLOB NOT NULL,
	PRIMARY KEY (device, id)
);
CREATE TABLE IF NOT EXISTS wasim_message (
	seq     INTEGER PRIMARY KEY AUTOINCREMENT,
	phone   TEXT NOT NULL REFERENCES wasim_account(phone),
	sender  TEXT NOT NULL,
	id      TEXT NOT NULL,
	ts      INTEGER NOT NULL,
	text    TEXT NOT NULL,
	chat    TEXT NOT NULL,
	from_me INTEGER NOT NULL
);
-- A message resent after a reconnect is filed once.
CREATE UNIQUE INDEX IF NOT EXISTS wasim_message_once ON wasim_message (phone, id, from_me);
`

// openDB opens the simulator's own tables (world.db) and the peers' Signal
// state (signal.db, a whatsmeow sqlstore). With dir "" both live in memory.
func openDB(ctx context.Context, dir string) (*sql.DB, *sqlstore.Container, error) {
	db, err := openSQLite(dir, "world.db")
	if err != nil {
		return nil, nil, err
	}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("wasim: create schema: %w", err)
	}
	sdb, err := openSQLite(dir, "signal.db")
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	signal := sqlstore.NewWithDB(sdb, "sqlite", waLog.Noop)
	if err := signal.Upgrade(ctx); err != nil {
		db.Close()
		sdb.Close()
		return nil, nil, fmt.Errorf("wasim: upgrade signal store: %w", err)
	}
	return db, signal, nil
}

func openSQLite(dir, name string) (*sql.DB, error) {
	if dir == "" {
		db, err := sql.Open("sqlite", "file::memory:?_pragma=foreign_keys(1)")
		if err != nil {
			return nil, err
		}
		// Every pool connection to :memory: is a new, empty database: one
		// connection keeps one database.
		db.SetMaxOpenConns(1)
		return db, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	path := filepath.Join(dir, name)
	// Create the file first so that SQLite (and its -wal and -shm files,
	// which copy the main file's mode) is private to us.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("wasim: %w", err)
	}
	return sql.Open("sqlite", "file:"+path+"?"+dsnPragmas)
}

func (w *world) saveAccount(ctx context.Context, a *account) error {
	_, err := w.db.ExecContext(ctx, `INSERT INTO wasim_account (phone, push_name, lid_user, identity, next_device)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (phone) DO UPDATE SET push_name = excluded.push_name, next_device = excluded.next_device`,
		a.phone, a.pushName, a.lidUser, a.identity.Priv[:], a.nextDevice)
	return err
}

func (w *world) saveDevice(ctx context.Context, phone string, d *device) error {
	_, err := w.db.ExecContext(ctx, `INSERT INTO wasim_device
		(jid, phone, lid, noise_key, identity, reg_id, skey_id, skey_pub, skey_sig, removed, linked_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (jid) DO UPDATE SET removed = excluded.removed`,
		d.jid.String(), phone, d.lid.String(), d.noiseKey[:], d.identity[:], d.regID,
		d.skeyID, d.skeyPub[:], d.skeySig[:], d.removed, d.linkedAt.UnixMilli())
	return err
}

// The one-time prekeys devices upload live in the database only (about
// 30 kB per device were they kept in memory too); a device keeps just
// their count.

// savePreKeys stores keys for device jid and returns how many it holds.
func (w *world) savePreKeys(ctx context.Context, jid types.JID, keys map[uint32][32]byte) (int, error) {
	tx, err := w.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback()
	// One statement for the batch (a first upload is 812 keys): parsing it
	// again for each key was most of the upload's cost.
	ins, err := tx.PrepareContext(ctx, `INSERT OR REPLACE INTO wasim_prekey (device, id, pub) VALUES (?, ?, ?)`)
	if err != nil {
		return 0, err
	}
	defer ins.Close()
	for id, pub := range keys {
		if _, err := ins.ExecContext(ctx, jid.String(), id, pub[:]); err != nil {
			return 0, err
		}
	}
	var n int
	if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM wasim_prekey WHERE device = ?`, jid.String()).Scan(&n); err != nil {
		return 0, err
	}
	return n, tx.Commit()
}

// popPreKey hands out d's lowest uploaded prekey, once. w.mu must be held.
func (w *world) popPreKey(ctx context.Context, d *device) (id uint32, pub [32]byte, ok bool, err error) {
	var raw []byte
	err = w.db.QueryRowContext(ctx, `SELECT id, pub FROM wasim_prekey WHERE device = ? ORDER BY id LIMIT 1`, d.jid.String()).Scan(&id, &raw)
	if errors.Is(err, sql.ErrNoRows) {
		d.prekeys = 0
		return 0, pub, false, nil
	}
	if err != nil {
		return 0, pub, false, err
	}
	if _, err := w.db.ExecContext(ctx, `DELETE FROM wasim_prekey WHERE device = ? AND id = ?`, d.jid.String(), id); err != nil {
		return 0, pub, false, err
	}
	d.prekeys = max(d.prekeys-1, 0)
	if len(raw) != 32 {
		return 0, pub, false, fmt.Errorf("stored prekey %d of %s is %d bytes", id, d.jid, len(raw))
	}
	return id, [32]byte(raw), true, nil
}

// load reads every account and device into memory. The maps are the
// working state; the database is written through on every change.
func (w *world) load(ctx context.Context) error {
	rows, err := w.db.QueryContext(ctx, `SELECT phone, push_name, lid_user, identity, next_device FROM wasim_account`)
	if err != nil {
		return err
	}
	var accounts []*account
	for rows.Next() {
		a := &account{}
		var priv []byte
		if err := rows.Scan(&a.phone, &a.pushName, &a.lidUser, &priv, &a.nextDevice); err != nil {
			rows.Close()
			return err
		}
		if len(priv) != 32 {
			rows.Close()
			return fmt.Errorf("wasim: account %s: bad identity key", a.phone)
		}
		a.identity = keyPairFromPrivate(priv)
		accounts = append(accounts, a)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	// The peers are read only after the rows are closed: an in-memory
	// database has a single connection.
	for _, a := range accounts {
		if err := w.attachPeer(ctx, a); err != nil {
			return err
		}
		w.addAccountLocked(a)
	}
	if err := w.loadDevices(ctx); err != nil {
		return err
	}
	return w.loadPreKeys(ctx)
}

func (w *world) loadDevices(ctx context.Context) error {
	rows, err := w.db.QueryContext(ctx, `SELECT jid, phone, lid, noise_key, identity, reg_id, skey_id, skey_pub, skey_sig, removed, linked_at FROM wasim_device`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var jid, phone, lid string
		var noiseKey, ident, skeyPub, skeySig []byte
		var linked int64
		d := &device{}
		if err := rows.Scan(&jid, &phone, &lid, &noiseKey, &ident, &d.regID, &d.skeyID, &skeyPub, &skeySig, &d.removed, &linked); err != nil {
			return err
		}
		if d.jid, err = types.ParseJID(jid); err != nil {
			return err
		}
		if d.lid, err = types.ParseJID(lid); err != nil {
			return err
		}
		if len(noiseKey) != 32 || len(ident) != 32 || len(skeyPub) != 32 || len(skeySig) != 64 {
			return fmt.Errorf("wasim: device %s: bad key sizes", jid)
		}
		d.noiseKey, d.identity, d.skeyPub, d.skeySig = [32]byte(noiseKey), [32]byte(ident), [32]byte(skeyPub), [64]byte(skeySig)
		d.linkedAt = time.UnixMilli(linked)
		w.devices[jid] = d
	}
	return rows.Err()
}

func (w *world) loadPreKeys(ctx context.Context) error {
	rows, err := w.db.QueryContext(ctx, `SELECT device, COUNT(*) FROM wasim_prekey GROUP BY device`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var jid string
		var n int
		if err := rows.Scan(&jid, &n); err != nil {
			return err
		}
		if d := w.devices[jid]; d != nil {
			d.prekeys = n
		}
	}
	return rows.Err()
}

// saveMessage files m in its phone's inbox, once per message id.
func (w *world) saveMessage(ctx context.Context, m inboxMessage) error {
	_, err := w.db.ExecContext(ctx, `INSERT OR IGNORE INTO wasim_message (phone, sender, id, ts, text, chat, from_me)
		VALUES (?, ?, ?, ?, ?, ?, ?)`,
		m.phone, m.sender.String(), m.id, m.ts.UnixMilli(), m.text, m.chat.String(), m.fromMe)
	return err
}

// messages returns phone's inbox, oldest first.
func (w *world) messages(ctx context.Context, phone string) ([]inboxMessage, error) {
	rows, err := w.db.QueryContext(ctx, `SELECT sender, id, ts, text, chat, from_me FROM wasim_message WHERE phone = ? ORDER BY seq`, phone)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []inboxMessage
	for rows.Next() {
		var sender, chat string
		var ts int64
		m := inboxMessage{phone: phone}
		if err := rows.Scan(&sender, &m.id, &ts, &m.text, &chat, &m.fromMe); err != nil {
			return nil, err
		}
		if m.sender, err = types.ParseJID(sender); err != nil {
			return nil, err
		}
		if m.chat, err = types.ParseJID(chat); err != nil {
			return nil, err
		}
		m.ts = time.UnixMilli(ts)
		out = append(out, m)
	}
	return out, rows.Err()
}
