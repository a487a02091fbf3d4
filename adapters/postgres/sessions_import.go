package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"go.mau.fi/whatsmeow/store/sqlstore"
	_ "modernc.org/sqlite" // the session databases ImportSession reads
)

// ImportedSession is what ImportSession did with one session database.
type ImportedSession struct {
	// JID is the device the database holds; "" when it holds none (a
	// pairing the phone never linked): nothing was copied.
	JID string
	// Copied is false when PostgreSQL had the device already: nothing was
	// copied (the replicas may have moved the session on since).
	Copied bool
}

// ImportSession copies a whatsmeow session database in SQLite (a storage
// folder's session.db, for `whatsapp migrate`) into the shared store, as
// the linked session of slot deviceID: every row of every whatsmeow table,
// and its gowa_sessions row, in one transaction, so that a run stopped
// midway leaves whole sessions only.
//
// jid is the device the database should hold (the session folder's name),
// or "" to take whichever it holds (a pairing a crash cut off after the
// phone linked it). A database of an older whatsmeow schema is first
// brought to this build's, as a gateway would at start; the versions on
// both sides must then agree. Rows PostgreSQL has already (the LID map,
// which all sessions share) are kept as they are. A session whose device
// a replica holds the lease of is refused with ErrFenced.
func (s *Sessions) ImportSession(ctx context.Context, path, jid, deviceID string) (ImportedSession, error) {
	if jid == "" {
		found, err := sessionJID(ctx, path)
		if err != nil || found == "" {
			return ImportedSession{}, err
		}
		jid = found
	}
	got := ImportedSession{JID: jid}
	var there bool
	if err := s.db.Pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM whatsmeow_device WHERE jid = $1)`, jid).Scan(&there); err != nil {
		return got, Unavailable(err)
	}
	if there {
		return got, nil
	}
	tables, err := s.importTables(ctx)
	if err != nil {
		return got, fmt.Errorf("read whatsmeow's tables in PostgreSQL: %w", Unavailable(err))
	}
	src, err := sql.Open("sqlite", "file:"+escapePath(path)+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)")
	if err != nil {
		return got, err
	}
	defer src.Close()
	src.SetMaxOpenConns(1)
	if err := sqlstore.NewWithDB(src, "sqlite", nil).Upgrade(ctx); err != nil {
		return got, fmt.Errorf("upgrade whatsmeow's schema: %w", err)
	}
	var from, to int
	if err := src.QueryRowContext(ctx, `SELECT version FROM whatsmeow_version`).Scan(&from); err != nil {
		return got, fmt.Errorf("read whatsmeow's schema version: %w", err)
	}
	if err := s.db.Pool.QueryRow(ctx, `SELECT version FROM whatsmeow_version`).Scan(&to); err != nil {
		return got, fmt.Errorf("read whatsmeow's schema version in PostgreSQL: %w", Unavailable(err))
	}
	if from != to {
		return got, fmt.Errorf("whatsmeow schema version %d in the folder, %d in PostgreSQL", from, to)
	}
	var found string
	if err := src.QueryRowContext(ctx, `SELECT jid FROM whatsmeow_device`).Scan(&found); err != nil {
		return got, fmt.Errorf("read the session's device: %w", err)
	}
	if found != jid {
		return got, fmt.Errorf("the session database holds %s", found)
	}
	err = pgx.BeginFunc(ctx, s.db.Pool, func(tx pgx.Tx) error {
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
	switch {
	case Fenced(err):
		return got, fmt.Errorf("%w: a replica runs this device already", ErrFenced)
	case err != nil:
		return got, Unavailable(err)
	}
	got.Copied = true
	return got, nil
}

// escapePath keeps a path's ? and # out of the SQLite URI's query.
func escapePath(path string) string {
	return strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path)
}

// sessionJID returns the JID of the device in the session database at
// path, read only, "" when it holds none (an empty file, a pairing never
// linked).
func sessionJID(ctx context.Context, path string) (string, error) {
	src, err := sql.Open("sqlite", "file:"+escapePath(path)+"?mode=ro&_pragma=busy_timeout(5000)")
	if err != nil {
		return "", err
	}
	defer src.Close()
	var has int
	if err := src.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'whatsmeow_device'`).Scan(&has); err != nil || has == 0 {
		return "", nil // not a session database (yet): it holds nothing
	}
	var jid string
	err = src.QueryRowContext(ctx, `SELECT jid FROM whatsmeow_device`).Scan(&jid)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return jid, err
}

// pgTable is a whatsmeow table of the shared schema and its columns' types.
type pgTable struct {
	name  string
	cols  []string
	types []string // information_schema's data_type of each column
}

// importTables lists whatsmeow's tables in PostgreSQL (but its version
// table), each after the tables its foreign keys point to. Read once:
// whatsmeow's schema does not change after OpenSessions upgraded it.
func (s *Sessions) importTables(ctx context.Context) ([]pgTable, error) {
	s.importMu.Lock()
	defer s.importMu.Unlock()
	if s.tables != nil {
		return s.tables, nil
	}
	rows, err := s.db.Pool.Query(ctx, `
		SELECT table_name, column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name LIKE 'whatsmeow\_%' AND table_name <> 'whatsmeow_version'
		ORDER BY table_name, ordinal_position`)
	if err != nil {
		return nil, err
	}
	byName := map[string]*pgTable{}
	var names []string
	var t, c, ty string
	_, err = pgx.ForEachRow(rows, []any{&t, &c, &ty}, func() error {
		if byName[t] == nil {
			byName[t] = &pgTable{name: t}
			names = append(names, t)
		}
		byName[t].cols = append(byName[t].cols, c)
		byName[t].types = append(byName[t].types, ty)
		return nil
	})
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{}
	rows, err = s.db.Pool.Query(ctx, `
		SELECT c.conrelid::regclass::text, c.confrelid::regclass::text FROM pg_constraint c
		WHERE c.contype = 'f' AND c.connamespace = current_schema()::regnamespace`)
	if err != nil {
		return nil, err
	}
	var from, to string
	_, err = pgx.ForEachRow(rows, []any{&from, &to}, func() error {
		if from != to {
			deps[from] = append(deps[from], to)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	order := []pgTable{}
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
	s.tables = order
	return order, nil
}

// copyTable copies every row of t from the SQLite session database into
// PostgreSQL. Rows PostgreSQL has already are left as they are.
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
