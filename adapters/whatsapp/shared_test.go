package whatsapp_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"

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
	// generated counts, per JID, the prekeys GetOrGenPreKeys returned
	// through the store SharedStore.PreKeys gave the session.
	mu        sync.Mutex
	generated map[string]int
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
	se := &sharedEnv{db: db, sessions: sessions, generated: map[string]int{}}
	opts.Shared = &whatsapp.SharedStore{Container: sessions.Container(), Pairings: sessions,
		PreKeys: func(jid types.JID, inner store.PreKeyStore) store.PreKeyStore {
			return countingPreKeys{sessions.PreKeys(jid, inner), se, jid.String()}
		}}
	se.env = &env{t: t, sim: sim, wa: whatsapp.New(opts), dir: t.TempDir()}
	return se
}

type countingPreKeys struct {
	store.PreKeyStore
	e   *sharedEnv
	jid string
}

func (c countingPreKeys) GetOrGenPreKeys(ctx context.Context, n uint32) ([]*keys.PreKey, error) {
	ks, err := c.PreKeyStore.GetOrGenPreKeys(ctx, n)
	c.e.mu.Lock()
	c.e.generated[c.jid] += len(ks)
	c.e.mu.Unlock()
	return ks, err
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

// A session linked and connected on the shared store uploads its first
// prekeys through the store SharedStore.PreKeys gives it (one statement for
// the 812, not whatsmeow's one each).
func TestSharedStoreFirstPreKeysThroughTheGivenStore(t *testing.T) {
	t.Parallel()
	e := newSharedEnv(t)
	uploaded := func(jid string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			var n int
			if err := e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM whatsmeow_pre_keys WHERE jid = $1 AND uploaded`, jid).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n >= 812 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d prekeys of %s uploaded after 60 s, want 812", n, jid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		e.mu.Lock()
		defer e.mu.Unlock()
		if got := e.generated[jid]; got < 812 {
			t.Errorf("the given prekey store handed out %d keys of %s, want the 812 uploaded", got, jid)
		}
	}

	// The pairing's client stays quiet once paired: the session's first
	// connection, by its JID, uploads them.
	id := e.link("phone", e.phone("Alice"))
	c, _ := e.connect(id.JID)
	defer c.Close()
	uploaded(id.JID)
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
