package whatsapp_test

import (
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

// The ports.Client contract, on the simulator: the domain's fake client
// passes the same suite.
func TestClientContract(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.phone("Alice")
	// One linked session, paired once and copied for each case that needs
	// one (pairing is the costly part).
	linked := filepath.Join(e.dir, "linked.db")
	e.pairQR(linked, alice)
	n := 0
	fresh := func(t *testing.T) string {
		n++
		return filepath.Join(e.dir, fmt.Sprintf("s%d.db", n))
	}
	recorders := map[ports.Client]*recorder{}
	portstest.Client(t, portstest.ClientEnv{
		Unpaired: func(t *testing.T) (ports.Client, func() []domain.Event) {
			c, rec := e.open(fresh(t))
			recorders[c] = rec
			return c, rec.all
		},
		Linked: func(t *testing.T) (ports.Client, func() []domain.Event) {
			path := fresh(t)
			copySession(t, linked, path)
			c, rec := e.open(path)
			recorders[c] = rec
			return c, rec.all
		},
		Online: func(t *testing.T, c ports.Client) {
			if err := c.Connect(ctxFor(t)); err != nil {
				t.Fatal(err)
			}
			waitEvent[domain.Connected](t, recorders[c])
		},
		Disturb: func(t *testing.T, c ports.Client) {
			id, _ := c.Identity()
			e.sim.DropConnections(id.JID)
		},
	})
}

// copySession copies a closed session database consistently, as a second
// copy of one linked session (used one at a time).
func copySession(t *testing.T, from, to string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+from+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?`, to); err != nil {
		t.Fatal(err)
	}
}
