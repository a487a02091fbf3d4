package wasim_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	waLog "go.mau.fi/whatsmeow/util/log"
	"go.uber.org/goleak"
	_ "modernc.org/sqlite"

	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/domain"
)

// waitTimeout bounds every wait of these tests. The flows take well under
// a second on a quiet machine, but a first login's 812 prekeys take many
// seconds under -race when the package shares 2 cores with the rest of
// the suite; the tests wait for events, so a generous bound costs nothing.
const waitTimeout = 60 * time.Second

const (
	alice = "628111111111"
	bob   = "628222222222"
)

func TestMain(m *testing.M) {
	// whatsmeow trusts one certificate root per process; every simulator
	// chains to this one.
	whatsmeow.WACertPubKey = wasim.RootPublicKey()
	goleak.VerifyTestMain(m,
		// whatsmeow's frame reader sends a frame that arrived while the
		// socket was closing on an unbuffered channel nobody reads any more,
		// and blocks there for good (socket/framesocket.go, frameComplete).
		// It is whatsmeow's leak, rare and small; nothing outside the
		// library can unblock it.
		goleak.IgnoreTopFunction("go.mau.fi/whatsmeow/socket.(*FrameSocket).frameComplete"),
	)
}

// newServer starts a simulator, in memory when dir is "", closed when the
// test ends (after the test's clients, which are cleaned up first).
func newServer(t *testing.T, dir string) *wasim.Server {
	t.Helper()
	srv, err := wasim.New(wasim.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	return srv
}

func createPhone(t *testing.T, srv *wasim.Server, phone, name string) {
	t.Helper()
	if _, err := srv.CreatePhone(context.Background(), phone, name); err != nil {
		t.Fatal(err)
	}
}

// client is a bare whatsmeow client on its own SQLite session database,
// pointed at a simulator with the library's own setters.
type client struct {
	t         *testing.T
	cli       *whatsmeow.Client
	container *sqlstore.Container
	events    *recorder
	closeOnce sync.Once
}

func newClient(t *testing.T, srv *wasim.Server, path string) *client {
	t.Helper()
	return newClientVia(t, srv.HTTPClient(), path)
}

// newClientVia is newClient whose connections go through hc.
func newClientVia(t *testing.T, hc *http.Client, path string) *client {
	t.Helper()
	ctx := context.Background()
	dsn := "file:" + path + "?_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(off)&_pragma=busy_timeout(5000)"
	container, err := sqlstore.New(ctx, "sqlite", dsn, waLog.Noop)
	if err != nil {
		t.Fatal(err)
	}
	dev, err := container.GetFirstDevice(ctx)
	if err != nil {
		container.Close()
		t.Fatal(err)
	}
	logger := waLog.Noop
	// WASIM_DEBUG=1 shows whatsmeow's own debug log, secrets and all: for
	// a developer's terminal only.
	if os.Getenv("WASIM_DEBUG") != "" {
		logger = waLog.Stdout("client", "DEBUG", false)
	}
	c := &client{t: t, cli: whatsmeow.NewClient(dev, logger), container: container, events: newRecorder()}
	c.cli.SetPreLoginHTTPClient(hc)
	c.cli.SetWebsocketHTTPClient(hc)
	c.cli.AddEventHandler(c.events.handle)
	t.Cleanup(c.close)
	return c
}

// close disconnects and closes the session database, once.
func (c *client) close() {
	c.closeOnce.Do(func() {
		c.cli.Disconnect()
		if err := c.container.Close(); err != nil {
			c.t.Errorf("close session database: %v", err)
		}
	})
}

// storedDevices counts the sessions left in the client's database.
func (c *client) storedDevices() int {
	c.t.Helper()
	devs, err := c.container.GetAllDevices(context.Background())
	if err != nil {
		c.t.Fatal(err)
	}
	return len(devs)
}

// recorder keeps every event a client dispatched. Handlers must not block
// the client, so it only appends and wakes a waiter.
type recorder struct {
	mu    sync.Mutex
	evs   []any
	taken []bool
	wake  chan struct{}
}

func newRecorder() *recorder { return &recorder{wake: make(chan struct{}, 1)} }

func (r *recorder) handle(ev any) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.taken = append(r.taken, false)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// take removes and returns the oldest event of type T not taken yet.
func take[T any](r *recorder) (T, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, ev := range r.evs {
		if v, ok := ev.(T); ok && !r.taken[i] {
			r.taken[i] = true
			return v, true
		}
	}
	var zero T
	return zero, false
}

// waitFor waits for the next event of type T, skipping others.
func waitFor[T any](t *testing.T, c *client) T {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		if v, ok := take[T](c.events); ok {
			return v
		}
		select {
		case <-c.events.wake:
		case <-deadline.C:
			var zero T
			t.Fatalf("no %T within %v", zero, waitTimeout)
		}
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, waitTimeout)
		}
		<-tick.C
	}
}

func nextQR(t *testing.T, ch <-chan whatsmeow.QRChannelItem) whatsmeow.QRChannelItem {
	t.Helper()
	select {
	case item, ok := <-ch:
		if !ok {
			t.Fatal("QR channel closed")
		}
		return item
	case <-time.After(waitTimeout):
		t.Fatal("no QR channel item in time")
	}
	panic("unreachable")
}

// startPairing connects an unpaired client and returns its QR channel
// after the first code.
func startPairing(t *testing.T, c *client) (<-chan whatsmeow.QRChannelItem, whatsmeow.QRChannelItem) {
	t.Helper()
	ch, err := c.cli.GetQRChannel(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	first := nextQR(t, ch)
	if first.Event != whatsmeow.QRChannelEventCode {
		t.Fatalf("first QR item %q, want a code", first.Event)
	}
	return ch, first
}

// linkByQR pairs a new client at path to phone by QR and waits until it is
// logged in. It returns the client and the device JID.
func linkByQR(t *testing.T, srv *wasim.Server, phone, path string) (*client, string) {
	t.Helper()
	c := newClient(t, srv, path)
	_, first := startPairing(t, c)
	jid, err := srv.Scan(context.Background(), phone, first.Code)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	waitFor[*events.Connected](t, c)
	return c, jid
}

func dbPath(t *testing.T) string { return filepath.Join(t.TempDir(), "session.db") }

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

// counter counts the nodes clients send to a server, by "tag xmlns
// child", e.g. "iq usync usync" or "iq encrypt list" for a prekey upload.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func countNodes(srv *wasim.Server) *counter {
	c := &counter{n: map[string]int{}}
	srv.SetHook(func(_ wasim.ConnInfo, node *waBinary.Node) bool {
		key := node.Tag
		if xmlns, ok := node.Attrs["xmlns"].(string); ok {
			key += " " + xmlns
		}
		for _, child := range node.GetChildren() {
			if child.Tag != "registration" && child.Tag != "type" && child.Tag != "identity" {
				key += " " + child.Tag
				break
			}
		}
		c.mu.Lock()
		c.n[key]++
		c.mu.Unlock()
		return false
	})
	return c
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}
