package whatsapp_test

import (
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/domain"
)

// after waits for an event of type T that comes after index from.
func after[T domain.Event](t *testing.T, r *recorder, from int) int {
	t.Helper()
	_, i := r.next(t, from, func(ev domain.Event) bool { _, ok := ev.(T); return ok })
	return i
}

func TestNetworkDropReconnects(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	_, rec := e.connect(path)
	start := len(rec.all())
	if _, err := e.sim.Disrupt(ctxFor(t), sandbox.NetworkFault{Drop: true, Refuse: 300 * time.Millisecond}); err != nil {
		t.Fatalf("Disrupt: %v", err)
	}
	i := after[domain.Disconnected](t, rec, start)
	after[domain.Connected](t, rec, i)
}

func TestConnectWhileUnreachableRetries(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	// Refused until the client has seen the refusal, however long the
	// machine takes to get there; then WhatsApp is back.
	if _, err := e.sim.Disrupt(ctxFor(t), sandbox.NetworkFault{Refuse: time.Hour}); err != nil {
		t.Fatalf("Disrupt: %v", err)
	}
	c, rec := e.open(path)
	if err := c.Connect(ctxFor(t)); err != nil {
		t.Fatalf("Connect while WhatsApp is unreachable: %v, want a background retry", err)
	}
	i := after[domain.Disconnected](t, rec, 0)
	e.sim.RefuseConnections(0)
	after[domain.Connected](t, rec, i)
}

func TestStreamReplaced(t *testing.T) {
	t.Parallel()
	e, _, id, path := linkedEnv(t)
	_, first := e.connect(path)
	e.connect(path) // a second client with the same session
	if ev := waitEvent[domain.Offline](t, first); ev.Reason != domain.ReasonStreamReplaced {
		t.Errorf("offline for %s, want stream_replaced", ev.Reason)
	}
	conns, err := e.sim.Connections(ctxFor(t))
	if err != nil {
		t.Fatalf("Connections: %v", err)
	}
	if n := conns.ByDevice[id.JID]; n != 1 {
		t.Errorf("%d connections for %s after the takeover, want 1", n, id.JID)
	}
}

// WhatsApp may ask a logged-in session to restart (515) too; whatsmeow only
// reports it (DisableLoginAutoReconnect), so the adapter reconnects.
func TestRestartRequestOnALoggedInSession(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	var sent atomic.Bool
	e.sim.SetHook(func(ci wasim.ConnInfo, node *waBinary.Node) bool {
		if ci.Device != "" && node.Attrs["xmlns"] == "passive" && sent.CompareAndSwap(false, true) {
			if err := ci.Send(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "515"}}); err != nil {
				t.Errorf("sending 515: %v", err)
			}
		}
		return false
	})
	c, rec := e.open(path)
	if err := c.Connect(ctxFor(t)); err != nil {
		t.Fatalf("Connect: %v", err)
	}
	i := after[domain.Connected](t, rec, 0)
	after[domain.Connected](t, rec, i+1)
	if !sent.Load() {
		t.Fatalf("the hook never sent the 515")
	}
}

func TestStartQRWhileUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.sim.Disrupt(ctxFor(t), sandbox.NetworkFault{Refuse: time.Minute}); err != nil {
		t.Fatalf("Disrupt: %v", err)
	}
	c, _ := e.open(filepath.Join(e.dir, "session.db"))
	if err := c.StartQR(ctxFor(t)); domain.ErrorCode(err) != domain.EUNAVAILABLE {
		t.Errorf("StartQR while WhatsApp is unreachable: %v, want %s", err, domain.EUNAVAILABLE)
	}
	if err := c.StartQR(ctxFor(t)); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("StartQR again on the same client: %v, want %s", err, domain.ECONFLICT)
	}
}

func TestPairingEndsWhenTheConnectionDrops(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, rec := e.open(filepath.Join(e.dir, "session.db"))
	if err := c.StartQR(ctxFor(t)); err != nil {
		t.Fatalf("StartQR: %v", err)
	}
	waitEvent[domain.QRCode](t, rec)
	if _, err := e.sim.Disrupt(ctxFor(t), sandbox.NetworkFault{Drop: true}); err != nil {
		t.Fatalf("Disrupt: %v", err)
	}
	waitEvent[domain.PairingExpired](t, rec)
	for _, ev := range rec.all() {
		if _, ok := ev.(domain.Disconnected); ok {
			t.Errorf("an unpaired session reported Disconnected")
		}
	}
}
