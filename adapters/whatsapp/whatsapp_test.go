package whatsapp_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

func TestMain(m *testing.M) {
	// whatsmeow's and libsignal's settings are process-wide: set them once,
	// before parallel tests start simulators and clients.
	adapterOptions()
	goleak.VerifyTestMain(cleanupAfter{m},
		// whatsmeow's frame reader sends a frame that arrived while the
		// socket was closing on an unbuffered channel nobody reads any more,
		// and blocks there for good (socket/framesocket.go, frameComplete).
		// It is whatsmeow's leak, rare and small; nothing outside the
		// library can unblock it.
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
	)
}

// adapterOptions returns the options every test uses (apart from the HTTP
// client, which is per simulator) and applies their process-wide part.
var adapterOptions = sync.OnceValue(func() whatsapp.Options {
	root := wasim.RootPublicKey()
	opts := whatsapp.Options{OS: "GOWA test", CertRoot: &root}
	whatsapp.New(opts)
	return opts
})

// wait bounds every wait for the simulator; generous for -race on 2 cores.
const wait = 60 * time.Second

// env is one simulated WhatsApp network and the adapter pointed at it.
type env struct {
	t   *testing.T
	sim *wasim.Server
	wa  ports.WhatsApp
	dir string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	sim, err := wasim.New(wasim.Options{})
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
	wa := whatsapp.New(opts)
	return &env{t: t, sim: sim, wa: wa, dir: t.TempDir()}
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

// recorder collects a client's events and lets a test wait for them.
type recorder struct {
	mu     sync.Mutex
	events []domain.Event
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1)} }

func (r *recorder) push(ev domain.Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.signal <- struct{}{}:
	default:
	}
}

func (r *recorder) all() []domain.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]domain.Event(nil), r.events...)
}

// next waits for the first event after index from that matches, and
// returns it with its index.
func (r *recorder) next(t *testing.T, from int, match func(domain.Event) bool) (domain.Event, int) {
	t.Helper()
	deadline := time.After(wait)
	for {
		evs := r.all()
		for i := from; i < len(evs); i++ {
			if match(evs[i]) {
				return evs[i], i
			}
		}
		select {
		case <-r.signal:
		case <-deadline:
			t.Fatalf("no matching event in %s; got %#v", wait, evs)
			return nil, 0
		}
	}
}

func waitEvent[T domain.Event](t *testing.T, r *recorder) T {
	t.Helper()
	ev, _ := r.next(t, 0, func(ev domain.Event) bool { _, ok := ev.(T); return ok })
	return ev.(T)
}

// open opens the session at path on a context that ends with the test.
func (e *env) open(path string) (ports.Client, *recorder) {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	rec := newRecorder()
	c, err := e.wa.Open(ctx, path, rec.push)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c, rec
}

var phoneSeq atomic.Int64

// phone creates a simulated account with a number of its own.
func (e *env) phone(name string) sandbox.Phone {
	e.t.Helper()
	number := fmt.Sprintf("6281%09d", phoneSeq.Add(1))
	p, err := e.sim.CreatePhone(ctxFor(e.t), number, name)
	if err != nil {
		e.t.Fatalf("CreatePhone: %v", err)
	}
	return p
}

// pairQR links a new session at path to phone by QR and returns the closed
// client's identity; the session is left on disk.
func (e *env) pairQR(path string, phone sandbox.Phone) domain.Identity {
	e.t.Helper()
	c, rec := e.open(path)
	ctx := ctxFor(e.t)
	if err := c.StartQR(ctx); err != nil {
		e.t.Fatalf("StartQR: %v", err)
	}
	qr := waitEvent[domain.QRCode](e.t, rec)
	jid, err := e.sim.Scan(ctx, phone.Phone, qr.Code)
	if err != nil {
		e.t.Fatalf("Scan: %v", err)
	}
	paired := waitEvent[domain.Paired](e.t, rec)
	if paired.Identity.JID != jid {
		e.t.Fatalf("Paired JID %q, the phone linked %q", paired.Identity.JID, jid)
	}
	if err := c.Close(); err != nil {
		e.t.Fatalf("Close: %v", err)
	}
	return paired.Identity
}

// connect opens the paired session at path and waits until it is online.
func (e *env) connect(path string) (ports.Client, *recorder) {
	e.t.Helper()
	c, rec := e.open(path)
	if _, ok := c.Identity(); !ok {
		e.t.Fatalf("the session at %s is not paired", path)
	}
	if err := c.Connect(ctxFor(e.t)); err != nil {
		e.t.Fatalf("Connect: %v", err)
	}
	waitEvent[domain.Connected](e.t, rec)
	return c, rec
}

func TestQRPairingThenRestore(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.phone("Alice")
	path := filepath.Join(e.dir, "session.db")

	id := e.pairQR(path, alice)
	if id.Phone != alice.Phone || id.Platform == "" {
		t.Errorf("identity %+v, want phone %s and a platform", id, alice.Phone)
	}
	c, rec := e.connect(path)
	// While the session is open its WAL files exist, and SQLite gives them
	// the database's mode.
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatalf("session file: %v", err)
		}
		if mode := fi.Mode().Perm(); mode != 0o600 {
			t.Errorf("%s has mode %o, want 600", filepath.Base(name), mode)
		}
	}
	got, ok := c.Identity()
	if !ok || got.JID != id.JID {
		t.Errorf("restored identity %+v, %v; want JID %s", got, ok, id.JID)
	}
	conns, err := e.sim.Connections(ctxFor(t))
	if err != nil {
		t.Fatalf("Connections: %v", err)
	}
	if conns.ByDevice[id.JID] != 1 {
		t.Errorf("%d connections for %s, want 1 (%+v)", conns.ByDevice[id.JID], id.JID, conns)
	}
	for _, ev := range rec.all() {
		if _, ok := ev.(domain.QRCode); ok {
			t.Errorf("a restored session showed a QR code")
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestQREventsComeInOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.phone("Alice")
	c, rec := e.open(filepath.Join(e.dir, "session.db"))
	ctx := ctxFor(t)
	if err := c.StartQR(ctx); err != nil {
		t.Fatalf("StartQR: %v", err)
	}
	// A second call while pairing runs reuses it.
	if err := c.StartQR(ctx); err != nil {
		t.Fatalf("second StartQR: %v", err)
	}
	qr := waitEvent[domain.QRCode](t, rec)
	if qr.Timeout <= 0 || qr.Code == "" {
		t.Fatalf("QR event %+v", qr)
	}
	if _, err := e.sim.Scan(ctx, alice.Phone, qr.Code); err != nil {
		t.Fatalf("Scan: %v", err)
	}
	_, paired := rec.next(t, 0, func(ev domain.Event) bool { _, ok := ev.(domain.Paired); return ok })
	for i, ev := range rec.all() {
		switch ev.(type) {
		case domain.QRCode:
			if i > paired {
				t.Errorf("a QR code came after Paired: %#v", rec.all())
			}
		case domain.PairingFailed, domain.PairingExpired, domain.Connected:
			t.Errorf("unexpected %#v during pairing", ev)
		}
	}
	if _, ok := c.Identity(); !ok {
		t.Errorf("no identity after Paired")
	}
	// Nothing reconnects on the pairing database behind the service's back.
	conns, err := e.sim.Connections(ctx)
	if err != nil {
		t.Fatalf("Connections: %v", err)
	}
	if conns.LoggedIn != 0 {
		t.Errorf("%d logged-in connections after pairing, want 0 until Connect", conns.LoggedIn)
	}
}

func TestPairCode(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	bob := e.phone("Bob")
	path := filepath.Join(e.dir, "session.db")
	c, rec := e.open(path)
	ctx := ctxFor(t)
	asked := time.Now()
	code, expires, err := c.PairCode(ctx, bob.Phone, "GOWA")
	if err != nil {
		t.Fatalf("PairCode: %v", err)
	}
	// The code lives as long as the pairing connection: the QR series.
	if life := expires.Sub(asked); life < time.Minute || life > 3*time.Minute {
		t.Errorf("pairing code valid for %s, want the QR series' life", life)
	}
	if len(code) != 9 || code[4] != '-' {
		t.Errorf("pairing code %q, want XXXX-XXXX", code)
	}
	jid, err := e.sim.EnterCode(ctx, bob.Phone, code)
	if err != nil {
		t.Fatalf("EnterCode: %v", err)
	}
	paired := waitEvent[domain.Paired](t, rec)
	if paired.Identity.JID != jid {
		t.Errorf("Paired JID %q, the phone linked %q", paired.Identity.JID, jid)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	e.connect(path)
}

func TestPairCodeRejectsALocalNumber(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, _ := e.open(filepath.Join(e.dir, "session.db"))
	_, _, err := c.PairCode(ctxFor(t), "0812345678", "GOWA")
	if domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("PairCode with a local number: %v, want %s", err, domain.EINVALID)
	}
}

func TestSendText(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	carol := e.phone("Carol")
	c, _ := e.connect(path)
	ctx := ctxFor(t)

	for _, text := range []string{"Hello, Carol", "and again"} {
		sent, err := c.SendText(ctx, carol.Phone+"@s.whatsapp.net", text)
		if err != nil {
			t.Fatalf("SendText: %v", err)
		}
		if sent.ID == "" || sent.Timestamp.IsZero() {
			t.Errorf("sent message %+v lacks an id or time", sent)
		}
		msgs, err := e.sim.Messages(ctx, carol.Phone)
		if err != nil {
			t.Fatalf("Messages: %v", err)
		}
		found := false
		for _, m := range msgs {
			if m.ID == sent.ID && m.Text == text {
				found = true
			}
		}
		if !found {
			t.Errorf("Carol's inbox %+v lacks %q (id %s)", msgs, text, sent.ID)
		}
	}

	// A number with no WhatsApp account is refused before anything is sent.
	if _, err := c.SendText(ctx, "629999999999@s.whatsapp.net", "x"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Errorf("SendText to a number not on WhatsApp: %v, want %s", err, domain.ENOTFOUND)
	}
	if _, err := c.SendText(ctx, "not a jid", "x"); domain.ErrorCode(err) != domain.EINVALID {
		t.Errorf("SendText to a bad JID: %v, want %s", err, domain.EINVALID)
	}
	c.Disconnect()
	if _, err := c.SendText(ctx, carol.Phone+"@s.whatsapp.net", "x"); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("SendText while disconnected: %v, want %s", err, domain.ECONFLICT)
	}
}

// An idle session lets go of its database connection (SQLite then removes
// the WAL files, and the device holds no SQLite memory), and reopens it for
// the next thing it stores.
func TestIdleSessionClosesItsDatabase(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	opts := adapterOptions()
	opts.HTTPClient = e.sim.HTTPClient()
	opts.SessionIdle = time.Second // database/sql's shortest check interval
	e.wa = whatsapp.New(opts)
	carol := e.phone("Carol")
	c, _ := e.connect(path)
	gone := func() bool {
		_, err := os.Stat(path + "-shm")
		return errors.Is(err, fs.ErrNotExist)
	}
	for deadline := time.Now().Add(wait); !gone(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the idle session kept its database open")
		}
	}
	ctx := ctxFor(t)
	for _, text := range []string{"after a pause", "and again"} {
		sent, err := c.SendText(ctx, carol.Phone+"@s.whatsapp.net", text)
		if err != nil {
			t.Fatalf("SendText after the database was closed: %v", err)
		}
		msgs, _ := e.sim.Messages(ctx, carol.Phone)
		if len(msgs) == 0 || msgs[len(msgs)-1].ID != sent.ID {
			t.Fatalf("Carol's inbox %+v lacks %s", msgs, sent.ID)
		}
	}
}

// A phone number is looked up on WhatsApp once, then remembered.
func TestSendLooksUpANumberOnce(t *testing.T) {
	t.Parallel()
	e, _, _, path := linkedEnv(t)
	carol := e.phone("Carol")
	c, _ := e.connect(path)
	ctx := ctxFor(t)
	var lookups atomic.Int32
	e.sim.SetHook(func(_ wasim.ConnInfo, n *waBinary.Node) bool {
		if usync, ok := n.GetOptionalChildByTag("usync"); ok {
			if _, ok := usync.GetOptionalChildByTag("query", "contact"); ok {
				lookups.Add(1)
			}
		}
		return false
	})
	for range 3 {
		if _, err := c.SendText(ctx, carol.Phone+"@s.whatsapp.net", "hi"); err != nil {
			t.Fatal(err)
		}
	}
	if n := lookups.Load(); n != 1 {
		t.Errorf("%d lookups for three sends to one number, want 1", n)
	}
}

func TestLogout(t *testing.T) {
	t.Parallel()
	e, alice, id, path := linkedEnv(t)
	c, _ := e.connect(path)
	ctx := ctxFor(t)
	if err := c.Logout(ctx); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	if _, ok := c.Identity(); ok {
		t.Errorf("identity kept after Logout")
	}
	devs, err := e.sim.Devices(ctx, alice.Phone)
	if err != nil {
		t.Fatalf("Devices: %v", err)
	}
	for _, d := range devs {
		if d.JID == id.JID {
			t.Errorf("the phone still lists %s after Logout", id.JID)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	// The database no longer holds the session.
	c2, _ := e.open(path)
	if _, ok := c2.Identity(); ok {
		t.Errorf("the database still holds a session after Logout")
	}
	if err := c2.Logout(ctx); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("Logout of an unpaired session: %v, want %s", err, domain.ECONFLICT)
	}
}

func TestRemovedFromThePhone(t *testing.T) {
	t.Parallel()
	e, alice, id, path := linkedEnv(t)
	c, rec := e.connect(path)
	if err := e.sim.RemoveDevice(ctxFor(t), alice.Phone, id.JID); err != nil {
		t.Fatalf("RemoveDevice: %v", err)
	}
	out := waitEvent[domain.LoggedOut](t, rec)
	if out.Reason != domain.ReasonRemovedOnPhone || out.Detail == "" {
		t.Errorf("LoggedOut %+v, want removed_on_phone with WhatsApp's words", out)
	}
	if _, ok := c.Identity(); ok {
		t.Errorf("identity kept after LoggedOut")
	}
}

func TestUnpairedSessionRefusesConnect(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, _ := e.open(filepath.Join(e.dir, "session.db"))
	if _, ok := c.Identity(); ok {
		t.Fatalf("a new database has an identity")
	}
	if err := c.Connect(ctxFor(t)); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("Connect unpaired: %v, want %s", err, domain.ECONFLICT)
	}
	if _, err := c.SendText(ctxFor(t), "628111@s.whatsapp.net", "x"); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Errorf("SendText unpaired: %v, want %s", err, domain.ECONFLICT)
	}
}

func TestCloseDuringPairingStopsEverything(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	c, rec := e.open(filepath.Join(e.dir, "session.db"))
	if err := c.StartQR(ctxFor(t)); err != nil {
		t.Fatalf("StartQR: %v", err)
	}
	waitEvent[domain.QRCode](t, rec)
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	ctx := ctxFor(t)
	for {
		conns, err := e.sim.Connections(ctx)
		if err != nil {
			t.Fatalf("Connections: %v", err)
		}
		if conns.Open == 0 {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%d connections still open after Close", conns.Open)
		case <-time.After(10 * time.Millisecond):
		}
	}
}
