package chaos

import (
	"database/sql"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// jidFolder matches the session folder names of the storage layout
// (adapters/sqlite): a companion JID.
var jidFolder = regexp.MustCompile(`^[0-9]{1,24}(?:\.[0-9]{1,3}:[0-9]{1,5}|:[0-9]{1,5})?@(?:s\.whatsapp\.net|lid)$`)

// checkIntegrity runs PRAGMA integrity_check on every SQLite database under
// root (sessions, pairings, the registry, the simulator's world). Each is
// checked on a private copy of its files, so that the check, which replays
// the write-ahead log as the next start would, never changes what the
// gateway will find.
func checkIntegrity(t *testing.T, root string) int {
	t.Helper()
	scratch := t.TempDir()
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".db") {
			return err
		}
		n++
		dst := filepath.Join(scratch, fmt.Sprintf("%d.db", n))
		for _, suffix := range []string{"", "-wal"} {
			if err := copyFile(path+suffix, dst+suffix); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		db, err := sql.Open("sqlite", "file:"+dst)
		if err != nil {
			return err
		}
		defer db.Close()
		var res string
		if err := db.QueryRow("PRAGMA integrity_check").Scan(&res); err != nil {
			t.Errorf("integrity_check of %s: %v", rel(root, path), err)
			return nil
		}
		if res != "ok" {
			t.Errorf("integrity_check of %s: %s", rel(root, path), res)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func rel(root, path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}

// checkLayout fails the test if the storage root holds anything but the
// registry, the simulator's folder, and complete session folders: nothing
// left in .pairing or .trash, no folder that is not a session. The devices
// in pairing, whose logins are still under way, may each have their
// pairing folder ({id}-{hex}).
func checkLayout(t *testing.T, root string, pairing ...string) (sessions []string) {
	t.Helper()
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == ".pairing" || name == ".trash":
			inner, _ := os.ReadDir(filepath.Join(root, name))
			for _, i := range inner {
				id := i.Name()[:max(0, strings.LastIndex(i.Name(), "-"))]
				if name == ".pairing" && slices.Contains(pairing, id) {
					continue
				}
				t.Errorf("left half-made: %s/%s", name, i.Name())
			}
		case name == ".wasim":
		case name == ".lock": // held by the running gateway (one per folder)
		case strings.HasPrefix(name, "registry.db"), strings.HasPrefix(name, "events.db"):
		case e.IsDir() && jidFolder.MatchString(name):
			if _, err := os.Stat(filepath.Join(root, name, "session.db")); err != nil {
				t.Errorf("session folder %s without a session.db: %v", name, err)
				continue
			}
			sessions = append(sessions, name)
		default:
			t.Errorf("unexpected entry in the storage folder: %s", name)
		}
	}
	return sessions
}
