package whatsapp_test

import (
	"context"
	"slices"
	"testing"

	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

// sharedEnv is a simulated WhatsApp network and the adapter on the shared
// PostgreSQL store, as one replica of a cluster runs it.
type sharedEnv struct {
	*env
	db       *postgres.DB
	sessions *postgres.Sessions
}

func newSharedEnv(t *testing.T) *sharedEnv {
	t.Helper()
	uri := pgtest.DB(t)
	sim, err := wasim.New(wasim.Options{})
	if err != nil {
		t.Fatalf("wasim.New: %v", err)
	}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("closing the simulator: %v", err)
		}
	})
	db, err := postgres.Open(context.Background(), uri, postgres.Options{Holder: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	sessions, err := postgres.OpenSessions(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	opts := adapterOptions()
	opts.HTTPClient = sim.HTTPClient()
	opts.Shared = &whatsapp.SharedStore{Container: sessions.Container(), Pairings: sessions}
	e := &env{t: t, sim: sim, wa: whatsapp.New(opts), dir: t.TempDir()}
	return &sharedEnv{env: e, db: db, sessions: sessions}
}

// link pairs a new session for device id with phone by QR, promotes it as
// the device service does, and returns its identity.
func (e *sharedEnv) link(id string, phone sandbox.Phone) domain.Identity {
	e.t.Helper()
	key, err := e.sessions.NewPairing(id)
	if err != nil {
		e.t.Fatal(err)
	}
	ident := e.pairQR(key, phone)
	if err := e.sessions.Promote(key, ident.JID); err != nil {
		e.t.Fatal(err)
	}
	return ident
}

// The ports.Client contract on the shared PostgreSQL store.
func TestClientContractOnSharedStore(t *testing.T) {
	t.Parallel()
	e := newSharedEnv(t)
	alice := e.phone("Alice")
	recorders := map[ports.Client]*recorder{}
	portstest.Client(t, portstest.ClientEnv{
		Unpaired: func(t *testing.T) (ports.Client, func() []domain.Event) {
			key, err := e.sessions.NewPairing("u")
			if err != nil {
				t.Fatal(err)
			}
			c, rec := e.open(key)
			recorders[c] = rec
			return c, rec.all
		},
		Linked: func(t *testing.T) (ports.Client, func() []domain.Event) {
			id := e.link("l", alice)
			c, rec := e.open(id.JID)
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

// A pairing cut off after whatsmeow saved the linked device (the process
// died before Promote): the store lists the pairing, the adapter reopens it
// as linked, and once promoted it connects without pairing again. Closing
// clients leaves the shared store open; logging out deletes the device.
func TestSharedStorePairingCutOffThenRestored(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newSharedEnv(t)
	alice := e.phone("Alice")
	key, err := e.sessions.NewPairing("phone")
	if err != nil {
		t.Fatal(err)
	}
	id := e.pairQR(key, alice) // closed, not promoted

	stored, err := e.sessions.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	if want := []ports.StoredSession{{Key: key, DeviceID: "phone"}}; !slices.Equal(stored, want) {
		t.Fatalf("Sessions = %+v, want %+v", stored, want)
	}
	c, _ := e.open(key)
	got, ok := c.Identity()
	if !ok || got.JID != id.JID {
		t.Fatalf("the reopened pairing is %+v, %v; want linked as %s", got, ok, id.JID)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.sessions.Promote(key, id.JID); err != nil {
		t.Fatal(err)
	}
	online, _ := e.connect(id.JID)
	if err := online.Logout(ctxFor(t)); err != nil {
		t.Fatal(err)
	}
	jid, _ := types.ParseJID(id.JID)
	if dev, err := e.sessions.Container().GetDevice(ctx, jid); err != nil || dev != nil {
		t.Errorf("after logout the device is still stored (%v)", err)
	}
	if err := online.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.sessions.Container().GetAllDevices(ctx); err != nil {
		t.Errorf("the shared store was closed with a client: %v", err)
	}
}
