package whatsapp

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/store/sqlstore"
	waLog "go.mau.fi/whatsmeow/util/log"
)

// What SQLite holds for each linked session. A gateway keeps hundreds of
// sessions open, each in its own file, so every per-connection cost is paid
// once per device. Measured on 500 restored devices (one process, modernc
// SQLite's allocator counted apart from the Go heap), the defaults held
// about 0.56 MB per device outside the Go heap: two connections, each with
// its own page cache (up to 2 MB, about 140 kB in use), parsed schema
// (24 kB), lookaside buffers and WAL index. These settings bring an idle
// device's share to nearly nothing:
const (
	// sessionConns is one connection per database: whatsmeow takes the
	// write lock up front (_txlock=immediate) and its queries are short, so
	// a second connection bought no concurrency worth its memory.
	sessionConns = 1
	// defaultSessionIdle closes that connection once unused this long
	// (Options.SessionIdle). An idle linked device then holds no page
	// cache, schema, WAL index or open file; the next query reopens it in
	// well under a millisecond. database/sql checks at most once a second.
	defaultSessionIdle = 5 * time.Second
	// sessionCacheKiB caps the page cache of an open connection (SQLite's
	// default is 2 MB). A session database is a few hundred kilobytes read
	// a few rows at a time, and the OS page cache keeps it warm.
	sessionCacheKiB = 16
)

// openSessionDB opens the session database at path with the settings
// above, closing its connection after idle unused (0: defaultSessionIdle).
func openSessionDB(path string, idle time.Duration) (*sql.DB, error) {
	if idle <= 0 {
		idle = defaultSessionIdle
	}
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(sessionConns)
	db.SetMaxIdleConns(sessionConns)
	db.SetConnMaxIdleTime(idle)
	return db, nil
}

// dsn is the modernc SQLite data source for path. whatsmeow refuses to run
// without foreign keys; WAL with synchronous=NORMAL keeps the first login's
// 812 single-row prekey inserts fast while staying crash-safe; immediate
// transactions take the write lock up front, so a writer waits on
// busy_timeout instead of failing a read-to-write upgrade with BUSY.
// Memory-mapped I/O stays off (it would map every file into the process)
// and temporary tables stay in files (SQLite's default).
func dsn(path string) string {
	escaped := strings.NewReplacer("%", "%25", "?", "%3F", "#", "%23").Replace(path)
	return "file:" + escaped +
		"?_pragma=foreign_keys(1)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(NORMAL)" +
		"&_pragma=busy_timeout(5000)" +
		"&_pragma=cache_size(-" + strconv.Itoa(sessionCacheKiB) + ")" +
		"&_pragma=mmap_size(0)" +
		"&_txlock=immediate"
}

// emptySession is a session database with whatsmeow's schema in place and
// nothing else, made once per process (New starts it). A new session starts
// as a copy of it rather than running whatsmeow's schema upgrades, which
// take 5 to 50 ms on a busy machine, on a first login's critical path. It
// holds no keys: whatsmeow writes the device only once it pairs. nil when
// it could not be made; sessions then start empty and are upgraded.
var emptySession = sync.OnceValue(func() []byte {
	b, err := makeEmptySession(context.Background())
	if err != nil {
		return nil
	}
	return b
})

func makeEmptySession(ctx context.Context) ([]byte, error) {
	db, err := sql.Open("sqlite", "file::memory:?_pragma=foreign_keys(1)")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // each in-memory connection is its own database
	if err := sqlstore.NewWithDB(db, "sqlite", waLog.Noop).Upgrade(ctx); err != nil {
		return nil, err
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var out []byte
	err = conn.Raw(func(dc any) error {
		s, ok := dc.(interface{ Serialize() ([]byte, error) })
		if !ok {
			return errors.New("the SQLite driver cannot serialize a database")
		}
		out, err = s.Serialize()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("serialize the empty session: %w", err)
	}
	if len(out) < 100 {
		return nil, fmt.Errorf("serialize the empty session: %d bytes", len(out))
	}
	// Mark the file a WAL database (the header's write and read format
	// versions, bytes 18 and 19), so that the DSN's journal_mode(WAL) finds
	// nothing to change: converting on first open would write and fsync on
	// the login's path.
	out[18], out[19] = 2, 2
	return out, nil
}

// createPrivate creates path with mode 0600 unless it exists, so that
// SQLite never creates the session database with the umask's mode. A new
// file gets the empty session's contents.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if b := emptySession(); b != nil {
		if _, err := f.Write(b); err != nil {
			f.Close()
			_ = os.Remove(path)
			return err
		}
	}
	return f.Close()
}
