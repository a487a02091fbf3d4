package whatsapp_test

import (
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
)

// template is a simulated world, persisted to a folder, with Alice's phone
// and one session linked to it that has connected once (so its 812 prekeys
// are made and uploaded). It is made once; linkedEnv copies it for each test
// that starts from a linked session and is not about pairing.
var template struct {
	once  sync.Once
	dir   string // holds sim/ (the world) and session.db
	alice sandbox.Phone
	id    domain.Identity
	err   error
}

// linkedEnv returns a new env on a copy of the template world, Alice's
// phone and the path of a copy of the session linked to it.
func linkedEnv(t *testing.T) (*env, sandbox.Phone, domain.Identity, string) {
	t.Helper()
	template.once.Do(func() { makeTemplate(t) })
	if template.err != nil || template.dir == "" {
		t.Fatalf("no linked template to copy: %v", template.err)
	}
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(template.dir)); err != nil {
		t.Fatal(err)
	}
	// CopyFS makes files 0644 and folders 0777 (less the umask); the
	// session and the world want their own modes back.
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		} else if err == nil {
			_ = os.Chmod(p, 0o600)
		}
		return nil
	})
	sim, err := wasim.New(wasim.Options{Dir: filepath.Join(dir, "sim")})
	if err != nil {
		t.Fatalf("wasim.New: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("closing the simulator: %v", err)
		}
	})
	opts := adapterOptions()
	opts.HTTPClient = sim.HTTPClient()
	e := &env{t: t, sim: sim, wa: whatsapp.New(opts), dir: dir}
	return e, template.alice, template.id, filepath.Join(dir, "session.db")
}

// makeTemplate pairs and connects the template session once, on the first
// caller's test.
func makeTemplate(t *testing.T) {
	dir, err := os.MkdirTemp("", "gowa-wa-linked-")
	if err != nil {
		template.err = err
		return
	}
	sim, err := wasim.New(wasim.Options{Dir: filepath.Join(dir, "sim")})
	if err != nil {
		template.err = err
		return
	}
	opts := adapterOptions()
	opts.HTTPClient = sim.HTTPClient()
	e := &env{t: t, sim: sim, wa: whatsapp.New(opts), dir: dir}
	alice := e.phone("Alice")
	path := filepath.Join(dir, "session.db")
	id := e.pairQR(path, alice)
	c, _ := e.connect(path)
	if err := c.Close(); err != nil {
		template.err = err
	}
	if err := sim.Close(); err != nil && template.err == nil {
		template.err = err
	}
	if template.err == nil {
		template.dir, template.alice, template.id = dir, alice, id
	}
}

// cleanupAfter removes the template once every test has run, and the
// PostgreSQL cluster of the shared-store tests.
type cleanupAfter struct{ m *testing.M }

func (c cleanupAfter) Run() int {
	code := pgtest.Main(c.m)
	if template.dir != "" {
		_ = os.RemoveAll(template.dir)
	}
	return code
}
