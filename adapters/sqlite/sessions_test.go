package sqlite_test

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

const jid = "628123456789:12@s.whatsapp.net"

func newSessions(t *testing.T, root string) *sqlite.Sessions {
	t.Helper()
	s, err := sqlite.NewSessions(root)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeSession makes a real SQLite database at path holding value, the way
// a paired whatsmeow session would leave one.
func writeSession(t *testing.T, path, value string) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE IF NOT EXISTS v (s TEXT); DELETE FROM v; INSERT INTO v VALUES (?)`, value); err != nil {
		t.Fatal(err)
	}
}

func readSession(t *testing.T, path string) string {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v string
	if err := db.QueryRow(`SELECT s FROM v`).Scan(&v); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return v
}

// pair runs a pairing for device id up to the point where the phone linked
// it: a session database holding value sits in the pairing folder. It
// returns the pairing's key.
func pair(t *testing.T, s *sqlite.Sessions, id, value string) string {
	t.Helper()
	key, err := s.NewPairing(id)
	if err != nil {
		t.Fatal(err)
	}
	writeSession(t, locate(t, s, key), value)
	return key
}

// locate returns the database path of the session key.
func locate(t *testing.T, s *sqlite.Sessions, key string) string {
	t.Helper()
	path, err := s.Locate(key)
	if err != nil {
		t.Fatalf("Locate(%q): %v", key, err)
	}
	return path
}

// promote promotes key to jid and returns the session's database path.
func promote(t *testing.T, s *sqlite.Sessions, key, jid string) string {
	t.Helper()
	if err := s.Promote(key, jid); err != nil {
		t.Fatal(err)
	}
	return locate(t, s, jid)
}

func listSessions(t *testing.T, s *sqlite.Sessions) []ports.StoredSession {
	t.Helper()
	got, err := s.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func assertSessions(t *testing.T, got, want []ports.StoredSession) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("Sessions = %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("Sessions[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("%s holds %v, want nothing", dir, entries)
	}
}

func TestSessionsPairPromoteDelete(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	assertSessions(t, listSessions(t, s), nil)

	key, err := s.NewPairing("phone-1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(key, root) || strings.Contains(key, "/") {
		t.Fatalf("NewPairing = %q: a key, not a path", key)
	}
	path := locate(t, s, key)
	dir := filepath.Dir(path)
	if filepath.Dir(dir) != filepath.Join(root, ".pairing") || filepath.Base(path) != sqlite.SessionFile {
		t.Fatalf("NewPairing = %s, want a session.db under %s/.pairing", path, root)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("NewPairing created the database: %v", err)
	}
	marker, err := os.ReadFile(filepath.Join(dir, sqlite.MarkerFile))
	if err != nil || strings.TrimSpace(string(marker)) != "phone-1" {
		t.Fatalf("marker = %q, %v", marker, err)
	}
	assertMode(t, dir, 0o700)
	assertMode(t, filepath.Join(dir, sqlite.MarkerFile), 0o600)

	writeSession(t, path, "paired")
	assertSessions(t, listSessions(t, s), []ports.StoredSession{{Key: key, DeviceID: "phone-1"}})

	got := promote(t, s, key, jid)
	if want := s.Path(jid); got != want || want != filepath.Join(root, jid, sqlite.SessionFile) {
		t.Fatalf("Locate(jid) = %s, Path = %s", got, want)
	}
	if v := readSession(t, got); v != "paired" {
		t.Fatalf("promoted session holds %q", v)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("pairing folder still there: %v", err)
	}
	assertMode(t, filepath.Join(root, jid), 0o700)
	assertSessions(t, listSessions(t, s), []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "phone-1"}})

	// Delete takes the -wal and -shm files with the folder.
	for _, f := range []string{"-wal", "-shm"} {
		if err := os.WriteFile(got+f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 { // deleting a missing session is not an error
		if err := s.Delete(jid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(filepath.Join(root, jid)); !os.IsNotExist(err) {
		t.Errorf("session folder still there: %v", err)
	}
	assertSessions(t, listSessions(t, s), nil)
	assertEmptyDir(t, filepath.Join(root, ".trash"))
}

func TestSessionsPromoteReplaces(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	promote(t, s, pair(t, s, "old", "old"), jid)
	got := promote(t, s, pair(t, s, "new", "new"), jid)
	if v := readSession(t, got); v != "new" {
		t.Fatalf("session holds %q, want the new one", v)
	}
	assertSessions(t, listSessions(t, s), []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "new"}})
	assertEmptyDir(t, filepath.Join(root, ".trash"))
	assertEmptyDir(t, filepath.Join(root, ".pairing"))
}

func TestSessionsPromoteNeedsDatabase(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	old := promote(t, s, pair(t, s, "old", "old"), jid)
	empty, err := s.NewPairing("new")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Promote(empty, jid); err == nil {
		t.Fatal("Promote moved a pairing with no database")
	}
	if v := readSession(t, old); v != "old" {
		t.Fatalf("existing session holds %q after a failed promote", v)
	}
}

func TestSessionsDiscard(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	key := pair(t, s, "d", "x")
	for range 2 { // discarding a missing pairing is not an error
		if err := s.Discard(key); err != nil {
			t.Fatal(err)
		}
	}
	assertEmptyDir(t, filepath.Join(root, ".pairing"))
	assertEmptyDir(t, filepath.Join(root, ".trash"))
}

func TestSessionsAcceptedJIDs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	for _, j := range []string{
		"628123456789:12@s.whatsapp.net",
		"628123456789@s.whatsapp.net",
		"628123456789.1:0@s.whatsapp.net", // user.agent:device, as JID.String writes it
		"123456789012345:3@lid",
	} {
		if got, want := s.Path(j), filepath.Join(root, j, sqlite.SessionFile); got != want {
			t.Errorf("Path(%q) = %q, want %q", j, got, want)
		}
	}
}

func TestSessionsRefuseTraversal(t *testing.T) {
	t.Parallel()
	base := t.TempDir()
	root := filepath.Join(base, "root")
	s := newSessions(t, root)

	// Things outside the root, and the store's own folders, that a bad
	// argument could reach.
	outside := filepath.Join(base, "x")
	victim := filepath.Join(outside, sqlite.SessionFile)
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	writeSession(t, victim, "victim")
	linked := promote(t, s, pair(t, s, "linked", "linked"), jid)
	pending := pair(t, s, "pending", "pending")

	for _, bad := range []string{
		"", ".", "..", "../x", "a/b@s.whatsapp.net", "/etc/passwd", outside, ".pairing", ".trash",
		"../x@s.whatsapp.net", "628123456789:12@s.whatsapp.net/..", "628123@s.whatsapp.net/../../x",
		"628123@s.whatsapp.net\x00", "628123@g.us", "abc@s.whatsapp.net", " 628123@s.whatsapp.net",
	} {
		if p := s.Path(bad); p != "" {
			t.Errorf("Path(%q) = %q, want \"\"", bad, p)
		}
		if err := s.Delete(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("Delete(%q) = %v, want EINVALID", bad, err)
		}
		if err := s.Promote(pending, bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("Promote(_, %q) = %v, want EINVALID", bad, err)
		}
	}
	for _, bad := range []string{
		"", victim, outside, linked, locate(t, s, pending), jid,
		filepath.Join(root, ".pairing", "..", "..", "x", sqlite.SessionFile),
		filepath.Join(root, ".pairing", sqlite.SessionFile),
		filepath.Join(root, ".pairing", "..", jid, sqlite.SessionFile),
		"pairing:", "pairing:..", "pairing:../x", "pairing:" + jid, pending + "/../x", pending + "/..", "pairing:/etc",
	} {
		if err := s.Discard(bad); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("Discard(%q) = %v, want EINVALID", bad, err)
		}
		if err := s.Promote(bad, jid); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("Promote(%q, _) = %v, want EINVALID", bad, err)
		}
	}
	if _, err := s.NewPairing("../x"); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("NewPairing(../x) = %v, want EINVALID", err)
	}

	if v := readSession(t, victim); v != "victim" {
		t.Errorf("file outside the root changed: %q", v)
	}
	if v := readSession(t, linked); v != "linked" {
		t.Errorf("linked session changed: %q", v)
	}
	if v := readSession(t, locate(t, s, pending)); v != "pending" {
		t.Errorf("pairing session changed: %q", v)
	}
}

func TestSessionsIgnoresStrangers(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	// registry.db and friends live in the root too, beside the simulator's
	// folder, a folder that is no JID, and a JID folder with no database.
	openRegistry(t, root)
	for _, dir := range []string{".wasim", "not-a-jid", "628999@s.whatsapp.net"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	writeSession(t, filepath.Join(root, "not-a-jid", sqlite.SessionFile), "x")
	outside := t.TempDir()
	writeSession(t, filepath.Join(outside, sqlite.SessionFile), "x")
	if err := os.Symlink(outside, filepath.Join(root, "628777@s.whatsapp.net")); err != nil {
		t.Fatal(err)
	}
	assertSessions(t, listSessions(t, s), nil)
}

func TestSessionsPermissions(t *testing.T) {
	t.Parallel()
	root := filepath.Join(t.TempDir(), "fresh")
	s := newSessions(t, root)
	for _, dir := range []string{root, filepath.Join(root, ".pairing"), filepath.Join(root, ".trash")} {
		assertMode(t, dir, 0o700)
	}
	path := promote(t, s, pair(t, s, "p", "x"), jid)
	assertMode(t, filepath.Dir(path), 0o700)
	// SQLite made the database 0644 (umask permitting); Promote tightens it.
	assertMode(t, path, 0o600)
	assertMode(t, filepath.Join(filepath.Dir(path), sqlite.MarkerFile), 0o600)
}

// TestSessionsCrashRecovery builds the states a crash inside Promote, Delete
// or NewPairing can leave, and checks that NewSessions resolves each to one
// complete session.
func TestSessionsCrashRecovery(t *testing.T) {
	t.Parallel()

	t.Run("between the renames of Promote", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		s := newSessions(t, root)
		old := promote(t, s, pair(t, s, "dev", "old"), jid)
		pending := pair(t, s, "dev", "new")
		// The old session was set aside; the new one not yet moved in.
		aside := filepath.Join(root, ".trash", "replaced-01700000000000000000-0123456789abcdef-"+jid)
		if err := os.Rename(filepath.Dir(old), aside); err != nil {
			t.Fatal(err)
		}

		s = newSessions(t, root)
		if v := readSession(t, old); v != "old" {
			t.Fatalf("old session not put back: %q", v)
		}
		assertEmptyDir(t, filepath.Join(root, ".trash"))
		assertSessions(t, listSessions(t, s), []ports.StoredSession{
			{JID: jid, Key: jid, DeviceID: "dev"},
			{Key: pending, DeviceID: "dev"},
		})
		// The device service then finishes the cut-off pairing.
		got := promote(t, s, pending, jid)
		if v := readSession(t, got); v != "new" {
			t.Fatalf("session holds %q, want new", v)
		}
	})

	t.Run("several set aside", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		newSessions(t, root)
		for _, v := range []struct{ name, value string }{
			{"replaced-01700000000000000000-0123456789abcdef-" + jid, "older"},
			{"replaced-01700000000000000001-fedcba9876543210-" + jid, "newer"},
		} {
			dir := filepath.Join(root, ".trash", v.name)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			writeSession(t, filepath.Join(dir, sqlite.SessionFile), v.value)
		}
		s := newSessions(t, root)
		if v := readSession(t, s.Path(jid)); v != "newer" {
			t.Fatalf("put back %q, want the newer session", v)
		}
		assertEmptyDir(t, filepath.Join(root, ".trash"))
	})

	t.Run("after the renames of Promote", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		s := newSessions(t, root)
		path := promote(t, s, pair(t, s, "dev", "new"), jid)
		// The new session is in place; the old one is still in the trash.
		aside := filepath.Join(root, ".trash", "replaced-01700000000000000000-0123456789abcdef-"+jid)
		if err := os.MkdirAll(aside, 0o700); err != nil {
			t.Fatal(err)
		}
		writeSession(t, filepath.Join(aside, sqlite.SessionFile), "old")

		s = newSessions(t, root)
		if v := readSession(t, path); v != "new" {
			t.Fatalf("session holds %q, want new", v)
		}
		assertEmptyDir(t, filepath.Join(root, ".trash"))
		assertSessions(t, listSessions(t, s), []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "dev"}})
	})

	t.Run("during a delete", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		newSessions(t, root)
		half := filepath.Join(root, ".trash", "deleted-0123456789abcdef")
		if err := os.MkdirAll(half, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(half, sqlite.SessionFile+"-wal"), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		s := newSessions(t, root)
		assertEmptyDir(t, filepath.Join(root, ".trash"))
		assertSessions(t, listSessions(t, s), nil)
	})

	t.Run("before a pairing wrote anything", func(t *testing.T) {
		t.Parallel()
		root := t.TempDir()
		s := newSessions(t, root)
		if _, err := s.NewPairing("dev"); err != nil {
			t.Fatal(err)
		}
		kept := pair(t, s, "dev", "linked?")
		s = newSessions(t, root)
		assertSessions(t, listSessions(t, s), []ports.StoredSession{{Key: kept, DeviceID: "dev"}})
	})
}

// TestSessionsConcurrentPromote promotes 20 pairings for one JID at once:
// exactly one complete session must remain, and nothing in the trash.
func TestSessionsConcurrentPromote(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s := newSessions(t, root)
	paths := make([]string, 20)
	for i := range paths {
		paths[i] = pair(t, s, "dev", "v")
	}
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Go(func() {
			if err := s.Promote(p, jid); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if v := readSession(t, s.Path(jid)); v != "v" {
		t.Fatalf("session holds %q", v)
	}
	assertEmptyDir(t, filepath.Join(root, ".trash"))
	assertEmptyDir(t, filepath.Join(root, ".pairing"))
}
