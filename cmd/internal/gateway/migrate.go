package gateway

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.mau.fi/whatsmeow/store/sqlstore"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
)

// MigrateConfig says what Migrate moves where.
type MigrateConfig struct {
	// From is the storage folder of a gateway on SQLite (its --storages).
	From string
	// To is the PostgreSQL URI the replicas will share (their --db).
	To string
	// Out receives one line per thing copied or skipped, then a summary.
	// Nothing secret is written: no password, no session key, no webhook
	// secret.
	Out io.Writer
}

// MigrateReport counts what Migrate did.
type MigrateReport struct {
	SessionsCopied, SessionsSkipped int
	DevicesCopied, DevicesSkipped   int
	WebhooksCopied, WebhooksSkipped int
	// PairingsLeft counts pairings cut off in the folder before the phone
	// linked them: they hold nothing to move.
	PairingsLeft int
}

// Migrate copies a storage folder into PostgreSQL: every linked session
// (the rows of every whatsmeow table of each session.db, into whatsmeow's
// shared schema), the device slots and the devices' webhooks. It holds the
// folder's lock throughout, so it refuses to run while a gateway uses the
// folder, and no gateway starts on it meanwhile. The folder is left as it
// was (whatsmeow may bring an old session database up to its current
// schema, as a gateway would at start), so it stays a backup.
//
// Running it again changes nothing: a session whose device PostgreSQL has
// already is skipped whole (it may have moved on since: the replicas own
// it now), as are a slot whose id, and a webhook whose device, is there.
// Each session is copied in one transaction, so a run that stops midway
// leaves whole sessions only, and the next run copies the rest.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateReport, error) {
	var rep MigrateReport
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	root, err := filepath.Abs(cfg.From)
	if err != nil {
		return rep, err
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return rep, fmt.Errorf("storage folder %s: not found", root)
	}
	lock, err := lockStorage(root)
	if err != nil {
		return rep, err
	}
	defer lock.release()

	store, err := sqlite.NewSessions(root)
	if err != nil {
		return rep, err
	}
	stored, err := store.Sessions()
	if err != nil {
		return rep, err
	}
	var slots []domain.Slot
	if exists(filepath.Join(root, sqlite.RegistryFile)) {
		reg, err := sqlite.OpenRegistry(root)
		if err != nil {
			return rep, err
		}
		slots, err = reg.List(ctx)
		_ = reg.Close()
		if err != nil {
			return rep, err
		}
	}
	var hooks []domain.Webhook
	if exists(filepath.Join(root, sqlite.EventsFile)) {
		ev, err := sqlite.OpenEvents(root)
		if err != nil {
			return rep, err
		}
		hooks, err = ev.ListWebhooks(ctx)
		_ = ev.Close()
		if err != nil {
			return rep, err
		}
	}

	db, err := postgres.Open(ctx, cfg.To, postgres.Options{Holder: "migrate-" + randomHex(4), MaxConns: 4})
	if err != nil {
		return rep, err
	}
	defer db.Close()
	if _, err := postgres.OpenSessions(ctx, db, nil); err != nil {
		return rep, err
	}
	registry, webhooks := postgres.NewRegistry(db), postgres.NewEvents(db)

	var failed []error
	for _, st := range stored {
		path := store.Path(st.JID)
		if st.JID == "" {
			// A pairing cut off by a crash: one the phone had linked is
			// moved as the linked session it is (the device service adopts
			// it into its slot); one that never linked holds nothing.
			if path, err = store.Locate(st.Key); err != nil {
				return rep, err
			}
			if st.JID = pairedJID(ctx, path); st.JID == "" {
				rep.PairingsLeft++
				continue
			}
		}
		copied, err := copySession(ctx, db, path, st.JID, st.DeviceID)
		switch {
		case err != nil:
			failed = append(failed, fmt.Errorf("session %s: %w", st.JID, err))
			fmt.Fprintf(out, "session %s: not copied: %v\n", st.JID, err)
		case copied:
			rep.SessionsCopied++
			fmt.Fprintf(out, "session %s: copied\n", st.JID)
		default:
			rep.SessionsSkipped++
			fmt.Fprintf(out, "session %s: skipped (PostgreSQL has it)\n", st.JID)
		}
	}

	have, err := registry.List(ctx)
	if err != nil {
		return rep, fmt.Errorf("read PostgreSQL's devices: %w", err)
	}
	for _, sl := range slots {
		if slices.ContainsFunc(have, func(h domain.Slot) bool { return h.ID == sl.ID }) {
			rep.DevicesSkipped++
			fmt.Fprintf(out, "device %s: skipped (PostgreSQL has it)\n", sl.ID)
			continue
		}
		if err := registry.Put(ctx, sl); err != nil {
			failed = append(failed, fmt.Errorf("device %s: %w", sl.ID, err))
			fmt.Fprintf(out, "device %s: not copied: %v\n", sl.ID, err)
			continue
		}
		rep.DevicesCopied++
		fmt.Fprintf(out, "device %s: copied\n", sl.ID)
	}

	if len(hooks) > 0 {
		haveHooks, err := webhooks.ListWebhooks(ctx)
		if err != nil {
			return rep, fmt.Errorf("read PostgreSQL's webhooks: %w", err)
		}
		for _, w := range hooks {
			if slices.ContainsFunc(haveHooks, func(h domain.Webhook) bool { return h.DeviceID == w.DeviceID }) {
				rep.WebhooksSkipped++
				fmt.Fprintf(out, "webhook of %s: skipped (PostgreSQL has one)\n", w.DeviceID)
				continue
			}
			if err := webhooks.PutWebhook(ctx, w); err != nil {
				failed = append(failed, fmt.Errorf("webhook of %s: %w", w.DeviceID, err))
				fmt.Fprintf(out, "webhook of %s: not copied: %v\n", w.DeviceID, err)
				continue
			}
			rep.WebhooksCopied++
			fmt.Fprintf(out, "webhook of %s: copied\n", w.DeviceID)
		}
	}

	fmt.Fprintf(out, "sessions: %d copied, %d skipped; devices: %d copied, %d skipped; webhooks: %d copied, %d skipped\n",
		rep.SessionsCopied, rep.SessionsSkipped, rep.DevicesCopied, rep.DevicesSkipped, rep.WebhooksCopied, rep.WebhooksSkipped)
	if rep.PairingsLeft > 0 {
		fmt.Fprintf(out, "pairings cut off before the phone linked them: %d (they hold nothing to move)\n", rep.PairingsLeft)
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("%d not copied (run migrate again once fixed; what was copied stays): %w", len(failed), failed[0])
	}
	return rep, nil
}

// copySession copies the session database at path, linked as jid and made
// for the slot deviceID, into the shared whatsmeow schema, in one
// transaction. It copies nothing, and says so, when PostgreSQL has jid's
// device already.
func copySession(ctx context.Context, db *postgres.DB, path, jid, deviceID string) (bool, error) {
	var there bool
	if err := db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM whatsmeow_device WHERE jid = $1)`, jid).Scan(&there); err != nil {
		return false, err
	}
	if there {
		return false, nil
	}
	src, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		return false, err
	}
	defer src.Close()
	src.SetMaxOpenConns(1)
	// An older session database is brought to this build's whatsmeow
	// schema, as the gateway would at start; then both sides must agree.
	if err := sqlstore.NewWithDB(src, "sqlite", nil).Upgrade(ctx); err != nil {
		return false, fmt.Errorf("upgrade whatsmeow's schema: %w", err)
	}
	var from, to int
	if err := src.QueryRowContext(ctx, `SELECT version FROM whatsmeow_version`).Scan(&from); err != nil {
		return false, fmt.Errorf("read whatsmeow's schema version: %w", err)
	}
	if err := db.Pool.QueryRow(ctx, `SELECT version FROM whatsmeow_version`).Scan(&to); err != nil {
		return false, fmt.Errorf("read whatsmeow's schema version in PostgreSQL: %w", err)
	}
	if from != to {
		return false, fmt.Errorf("whatsmeow schema version %d in the folder, %d in PostgreSQL", from, to)
	}
	var found string
	if err := src.QueryRowContext(ctx, `SELECT jid FROM whatsmeow_device`).Scan(&found); err != nil {
		return false, fmt.Errorf("read the session's device: %w", err)
	}
	if found != jid {
		return false, fmt.Errorf("the session database holds %s", found)
	}
	tables, err := migrateOrder(ctx, db)
	if err != nil {
		return false, err
	}
	err = pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
		for _, t := range tables {
			if err := copyTable(ctx, src, tx, t); err != nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
		}
		_, err := tx.Exec(ctx, `
			INSERT INTO gowa_sessions (key, jid, device_id, maker) VALUES ($1, $1, $2, NULL)
			ON CONFLICT (key) DO NOTHING`, jid, deviceID)
		return err
	})
	if err != nil {
		if postgres.Fenced(err) {
			return false, fmt.Errorf("%w: a replica runs this device already", postgres.ErrFenced)
		}
		return false, err
	}
	return true, nil
}

// pairedJID returns the JID of the device in the session database at
// path, "" when it holds none (or cannot be read).
func pairedJID(ctx context.Context, path string) string {
	src, err := sql.Open("sqlite", "file:"+path+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return ""
	}
	defer src.Close()
	var jid string
	_ = src.QueryRowContext(ctx, `SELECT jid FROM whatsmeow_device`).Scan(&jid)
	return jid
}

// pgTable is a whatsmeow table of the shared schema and its columns' types.
type pgTable struct {
	name  string
	cols  []string
	types []string // information_schema's data_type of each column
}

// migrateOrder lists whatsmeow's tables in PostgreSQL (but its version
// table), each after the tables its foreign keys point to.
func migrateOrder(ctx context.Context, db *postgres.DB) ([]pgTable, error) {
	rows, err := db.Pool.Query(ctx, `
		SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name LIKE 'whatsmeow\_%' AND table_name <> 'whatsmeow_version'
		ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, err
	}
	byName := map[string]*pgTable{}
	var names []string
	for rows.Next() {
		var t, c, ty string
		if err := rows.Scan(&t, &c, &ty); err != nil {
			rows.Close()
			return nil, err
		}
		if byName[t] == nil {
			byName[t] = &pgTable{name: t}
			names = append(names, t)
		}
		byName[t].cols = append(byName[t].cols, c)
		byName[t].types = append(byName[t].types, ty)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	rows, err = db.Pool.Query(ctx, `
		SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
		WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var from, to string
		if err := rows.Scan(&from, &to); err != nil {
			rows.Close()
			return nil, err
		}
		if from != to {
			deps[from] = append(deps[from], to)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var order []pgTable
	done := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if done[n] || byName[n] == nil {
			return
		}
		done[n] = true
		for _, d := range deps[n] {
			visit(d)
		}
		order = append(order, *byName[n])
	}
	for _, n := range names {
		visit(n)
	}
	return order, nil
}

// copyTable copies every row of t from the SQLite session database into
// PostgreSQL. Rows PostgreSQL has already (the LID map, which all sessions
// share) are left as they are.
func copyTable(ctx context.Context, src *sql.DB, tx pgx.Tx, t pgTable) error {
	var has int
	if err := src.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?`, t.name).Scan(&has); err != nil {
		return err
	}
	if has == 0 {
		return nil // a table this session database never had rows for
	}
	quoted := make([]string, len(t.cols))
	params := make([]string, len(t.cols))
	for i, c := range t.cols {
		quoted[i] = pgx.Identifier{c}.Sanitize()
		params[i] = fmt.Sprintf("$%d", i+1)
	}
	rows, err := src.QueryContext(ctx, `SELECT `+strings.Join(quoted, ", ")+` FROM `+pgx.Identifier{t.name}.Sanitize())
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	defer rows.Close()
	insert := `INSERT INTO ` + pgx.Identifier{t.name}.Sanitize() + ` (` + strings.Join(quoted, ", ") + `) VALUES (` + strings.Join(params, ", ") + `) ON CONFLICT DO NOTHING`
	batch := &pgx.Batch{}
	for rows.Next() {
		vals := make([]any, len(t.cols))
		ptrs := make([]any, len(t.cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return fmt.Errorf("read: %w", err)
		}
		for i := range vals {
			if vals[i], err = pgValue(vals[i], t.types[i]); err != nil {
				return fmt.Errorf("column %s: %w", t.cols[i], err)
			}
		}
		batch.Queue(insert, vals...)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if batch.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, batch).Close()
}

// pgValue converts a value SQLite returned into one of the PostgreSQL
// column type typ: SQLite keeps booleans as integers and may hand text and
// blobs back as either.
func pgValue(v any, typ string) (any, error) {
	switch typ {
	case "boolean":
		switch x := v.(type) {
		case int64:
			return x != 0, nil
		case bool, nil:
			return x, nil
		}
	case "bytea":
		switch x := v.(type) {
		case string:
			return []byte(x), nil
		case []byte, nil:
			return x, nil
		}
	case "text":
		switch x := v.(type) {
		case []byte:
			return string(x), nil
		case string, nil:
			return x, nil
		}
	case "uuid":
		switch x := v.(type) {
		case []byte:
			if len(x) == 16 {
				return [16]byte(x), nil
			}
			return string(x), nil
		case string, nil:
			return x, nil
		}
	case "bigint", "integer", "smallint":
		switch x := v.(type) {
		case bool:
			if x {
				return int64(1), nil
			}
			return int64(0), nil
		case int64, nil:
			return x, nil
		}
	default:
		return v, nil
	}
	return nil, fmt.Errorf("a %T cannot go into a %s column", v, typ)
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
