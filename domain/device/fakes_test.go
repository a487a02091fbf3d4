package device

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// TestMain fails the package when any test leaves a goroutine behind: the
// service promises that Close stops every device loop, restore and client.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The fakes below stand at the port boundaries. They share one fakeDisk, so
// that a session the fake WhatsApp pairs is what the fake session store
// promotes, lists and deletes, as the real adapters share the storage root.

// fakeDisk is the in-memory session store: sessions by key. Like the real
// one, it takes only companion JIDs and its own pairing keys.
type fakeDisk struct {
	mu       sync.Mutex
	sessions map[string]*fakeSession
	seq      int

	promoteErr error // returned by Promote when set
	deleteErr  error // returned by Delete when set
}

// fakeSession is one session database.
type fakeSession struct {
	deviceID string           // the marker a pairing folder carries
	jid      string           // set once promoted
	identity *domain.Identity // nil while unpaired
	opened   bool             // a client opened it: it holds a database
}

// fakeJID accepts what the real store accepts as a companion JID.
var fakeJID = regexp.MustCompile(`^[0-9]{1,24}(?:\.[0-9]{1,3}:[0-9]{1,5}|:[0-9]{1,5})?@(?:s\.whatsapp\.net|lid)$`)

func (d *fakeDisk) checkJID(jid string) error {
	if !fakeJID.MatchString(jid) {
		return domain.Errorf(domain.EINVALID, "%q is not a companion JID", jid)
	}
	return nil
}

var _ ports.SessionStore = (*fakeDisk)(nil)

func newFakeDisk() *fakeDisk { return &fakeDisk{sessions: map[string]*fakeSession{}} }

func (d *fakeDisk) NewPairing(deviceID string) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := domain.ValidateDeviceID(deviceID); err != nil {
		return "", err
	}
	d.seq++
	key := fmt.Sprintf("pairing:%s-%d", deviceID, d.seq)
	d.sessions[key] = &fakeSession{deviceID: deviceID}
	return key, nil
}

func isPairingKey(key string) bool { return strings.HasPrefix(key, "pairing:") }

func (d *fakeDisk) Promote(pairingKey, jid string) error {
	if err := d.checkJID(jid); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.promoteErr != nil {
		return d.promoteErr
	}
	s, ok := d.sessions[pairingKey]
	switch {
	case !isPairingKey(pairingKey) || !ok:
		return domain.Errorf(domain.EINVALID, "%q is not a pairing session of this store", pairingKey)
	case !s.opened:
		return fmt.Errorf("promote %s: the pairing holds no session", jid)
	}
	delete(d.sessions, pairingKey)
	s.jid = jid
	d.sessions[jid] = s
	return nil
}

func (d *fakeDisk) Discard(pairingKey string) error {
	if !isPairingKey(pairingKey) {
		return domain.Errorf(domain.EINVALID, "%q is not a pairing session of this store", pairingKey)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.sessions, pairingKey)
	return nil
}

// key is the key of jid's linked session.
func (d *fakeDisk) key(jid string) string { return jid }

func (d *fakeDisk) Delete(jid string) error {
	if err := d.checkJID(jid); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.deleteErr != nil {
		return d.deleteErr
	}
	delete(d.sessions, jid)
	return nil
}

func (d *fakeDisk) Sessions() ([]ports.StoredSession, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []ports.StoredSession
	for _, key := range slices.Sorted(maps.Keys(d.sessions)) {
		s := d.sessions[key]
		out = append(out, ports.StoredSession{JID: s.jid, Key: key, DeviceID: s.deviceID})
	}
	return out, nil
}

// putLinked stores a linked session for jid, as a previous run left it.
func (d *fakeDisk) putLinked(deviceID, jid string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id := identityOf(jid)
	d.sessions[jid] = &fakeSession{deviceID: deviceID, jid: jid, identity: &id, opened: true}
}

// putPairing stores a pairing session cut off by a crash, paired or not.
func (d *fakeDisk) putPairing(deviceID string, paired *domain.Identity) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	key := fmt.Sprintf("pairing:%s-%d", deviceID, d.seq)
	d.sessions[key] = &fakeSession{deviceID: deviceID, identity: paired, opened: true}
	return key
}

func (d *fakeDisk) has(path string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.sessions[path]
	return ok
}

func (d *fakeDisk) paths() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Sorted(maps.Keys(d.sessions))
}

func (d *fakeDisk) identity(path string) (domain.Identity, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[path]
	if !ok || s.identity == nil {
		return domain.Identity{}, false
	}
	return *s.identity, true
}

func (d *fakeDisk) setIdentity(path string, id *domain.Identity) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.sessions[path]
	if !ok {
		s = &fakeSession{}
		d.sessions[path] = s
	}
	s.identity = id
}

func identityOf(jid string) domain.Identity {
	return domain.Identity{JID: jid, Phone: domain.PhoneOfJID(jid), PushName: "Ana", Platform: "android"}
}

// fakeWhatsApp opens fakeClients on fakeDisk sessions. By default a client
// shows its first QR code as soon as StartQR is called, and a paired client
// reports Connected as soon as Connect is called; tests turn that off, and
// can hold StartQR, Connect or PairCode until they release a gate.
type fakeWhatsApp struct {
	disk  *fakeDisk
	clock *fakeClock

	mu      sync.Mutex
	clients []*fakeClient
	open    int // clients opened and not closed
	maxOpen int // the most ever open at once

	connecting    int // Connect calls in flight
	maxConnecting int

	noAutoQR      bool          // StartQR shows no QR code by itself
	noAutoConnect bool          // Connect reports no Connected by itself
	startQRGate   chan struct{} // when set, StartQR waits for it to close
	connectGate   chan struct{} // when set, Connect waits for it to close
	pairCodeGate  chan struct{} // when set, PairCode waits for it to close
	// sendGate, when set, holds every SendText until it closes, whatever
	// the contexts: whatsmeow waits for the server's answer on its own
	// timeout.
	sendGate    chan struct{}
	startQRErr  error
	connectErr  error
	openErr     error // returned by Open when set
	logoutErr   error
	pairCodeErr func(phone string) error
}

var _ ports.WhatsApp = (*fakeWhatsApp)(nil)

func (w *fakeWhatsApp) Open(ctx context.Context, path string, events func(domain.Event)) (ports.Client, error) {
	w.mu.Lock()
	openErr := w.openErr
	w.mu.Unlock()
	if openErr != nil {
		return nil, openErr
	}
	w.disk.mu.Lock()
	if s, ok := w.disk.sessions[path]; ok {
		s.opened = true
	} else {
		w.disk.sessions[path] = &fakeSession{opened: true}
	}
	w.disk.mu.Unlock()
	c := &fakeClient{w: w, path: path, ctx: ctx, events: events, sendLock: make(chan struct{}, 1)}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.clients = append(w.clients, c)
	w.open++
	w.maxOpen = max(w.maxOpen, w.open)
	return c, nil
}

// opened returns the clients opened so far, oldest first.
func (w *fakeWhatsApp) opened() []*fakeClient {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.clients)
}

// counts returns how many clients were opened, how many are open now and
// the most that were ever open at once.
func (w *fakeWhatsApp) counts() (opened, open, maxOpen int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.clients), w.open, w.maxOpen
}

// last returns the newest client, waiting until there are at least n.
func (w *fakeWhatsApp) nth(t *testing.T, n int) *fakeClient {
	t.Helper()
	eventually(t, fmt.Sprintf("client #%d to be opened", n), func() bool { return len(w.opened()) >= n })
	return w.opened()[n-1]
}

func (w *fakeWhatsApp) last(t *testing.T) *fakeClient {
	t.Helper()
	cs := w.opened()
	if len(cs) == 0 {
		t.Fatal("no client was opened")
	}
	return cs[len(cs)-1]
}

// totals sums the lifecycle calls over every client.
func (w *fakeWhatsApp) totals() (startQR, connect, logout int) {
	for _, c := range w.opened() {
		c.mu.Lock()
		startQR += c.startQRs
		connect += c.connects
		logout += c.logouts
		c.mu.Unlock()
	}
	return
}

// fakeClient is one session. Tests drive it with emit, as whatsmeow's event
// handler would.
type fakeClient struct {
	w      *fakeWhatsApp
	path   string
	ctx    context.Context
	events func(domain.Event)

	mu          sync.Mutex
	closed      bool
	online      bool // it reported Connected, and no Disconnected since
	qrs         int
	startQRs    int
	connects    int
	logouts     int
	disconnects int
	pairCodes   []string // "phone|displayName"
	sent        []string // "to|text"
	sends       int      // SendText calls that reached the client
	// sendLock makes sends one at a time, as whatsmeow's own send lock
	// does: a send queued behind another waits for it, context or not.
	sendLock chan struct{}
}

var _ ports.Client = (*fakeClient)(nil)

func (c *fakeClient) Identity() (domain.Identity, bool) { return c.w.disk.identity(c.path) }

func (c *fakeClient) StartQR(ctx context.Context) error {
	c.mu.Lock()
	c.startQRs++
	c.mu.Unlock()
	if err := wait(ctx, c.ctx, c.w.startQRGate); err != nil {
		return err
	}
	if c.w.startQRErr != nil {
		return c.w.startQRErr
	}
	if !c.w.noAutoQR {
		c.showQR()
	}
	return nil
}

// showQR emits the next QR code of the series: "<path>#<n>".
func (c *fakeClient) showQR() string {
	c.mu.Lock()
	c.qrs++
	code := fmt.Sprintf("%s#%d", c.path, c.qrs)
	c.mu.Unlock()
	c.emit(domain.QRCode{Code: code, Timeout: 20 * time.Second})
	return code
}

func (c *fakeClient) PairCode(ctx context.Context, phone, displayName string) (string, time.Time, error) {
	c.mu.Lock()
	c.pairCodes = append(c.pairCodes, phone+"|"+displayName)
	n := len(c.pairCodes)
	c.mu.Unlock()
	if err := wait(ctx, c.ctx, c.w.pairCodeGate); err != nil {
		return "", time.Time{}, err
	}
	if c.w.pairCodeErr != nil {
		if err := c.w.pairCodeErr(phone); err != nil {
			return "", time.Time{}, err
		}
	}
	return fmt.Sprintf("CODE-%04d", n), c.w.clock.Now().Add(fakeCodeLife), nil
}

func (c *fakeClient) Connect(ctx context.Context) error {
	c.mu.Lock()
	c.connects++
	c.mu.Unlock()
	if _, paired := c.Identity(); !paired {
		return domain.Errorf(domain.ECONFLICT, "the session is not paired")
	}
	c.w.mu.Lock()
	c.w.connecting++
	c.w.maxConnecting = max(c.w.maxConnecting, c.w.connecting)
	c.w.mu.Unlock()
	err := wait(ctx, c.ctx, c.w.connectGate)
	c.w.mu.Lock()
	c.w.connecting--
	c.w.mu.Unlock()
	if err != nil {
		return err
	}
	if c.w.connectErr != nil {
		return c.w.connectErr
	}
	if !c.w.noAutoConnect {
		c.emit(domain.Connected{})
	}
	return nil
}

func (c *fakeClient) Disconnect() {
	c.mu.Lock()
	c.disconnects++
	c.online = false
	c.mu.Unlock()
}

func (c *fakeClient) Logout(ctx context.Context) error {
	c.mu.Lock()
	c.logouts++
	c.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err // as whatsmeow's request would
	}
	if _, paired := c.Identity(); !paired {
		return domain.Errorf(domain.ECONFLICT, "the session is not paired")
	}
	if c.w.logoutErr != nil {
		return c.w.logoutErr
	}
	c.mu.Lock()
	online := c.online
	c.mu.Unlock()
	if !online {
		return domain.Errorf(domain.EUNAVAILABLE, "WhatsApp could not be reached to log out")
	}
	// whatsmeow deletes the device from its store on logout.
	c.w.disk.setIdentity(c.path, nil)
	return nil
}

func (c *fakeClient) SendText(ctx context.Context, to, text string) (domain.SentMessage, error) {
	c.mu.Lock()
	c.sends++
	c.mu.Unlock()
	c.sendLock <- struct{}{}
	defer func() { <-c.sendLock }()
	c.w.mu.Lock()
	gate := c.w.sendGate
	c.w.mu.Unlock()
	if gate != nil {
		<-gate
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return domain.SentMessage{}, domain.Errorf(domain.ECONFLICT, "the session is not connected")
	}
	c.sent = append(c.sent, to+"|"+text)
	return domain.SentMessage{ID: fmt.Sprintf("MSG%d", len(c.sent)), Timestamp: time.Unix(1700000000, 0)}, nil
}

func (c *fakeClient) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	c.online = false
	c.w.mu.Lock()
	c.w.open--
	c.w.mu.Unlock()
	return nil
}

// emit reports ev, as whatsmeow's event handler would: never once the
// client is closed. It tracks whether the client is online, as the real
// one knows.
func (c *fakeClient) emit(ev domain.Event) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	switch ev.(type) {
	case domain.Connected:
		c.online = true
	case domain.Disconnected, domain.Offline, domain.LoggedOut:
		c.online = false
	}
	c.mu.Unlock()
	c.events(ev)
}

// deliverLate reports ev even though the client may be closed: an event
// that was on its way when it closed.
func (c *fakeClient) deliverLate(ev domain.Event) { c.events(ev) }

// pair saves identity in the client's session and reports Paired, as
// whatsmeow does after the phone scans the code.
func (c *fakeClient) pair(jid string) domain.Identity {
	id := identityOf(jid)
	c.w.disk.setIdentity(c.path, &id)
	c.emit(domain.Paired{Identity: id})
	return id
}

func (c *fakeClient) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *fakeClient) calls() (startQR, connect, logout, disconnect int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.startQRs, c.connects, c.logouts, c.disconnects
}

// wait blocks until gate closes (at once when gate is nil), or either
// context ends.
func wait(call, life context.Context, gate chan struct{}) error {
	if gate == nil {
		return nil
	}
	select {
	case <-gate:
		return nil
	case <-call.Done():
		return call.Err()
	case <-life.Done():
		return life.Err()
	}
}

// fakeRegistry keeps slots in a map.
type fakeRegistry struct {
	mu    sync.Mutex
	slots map[string]domain.Slot
}

var _ ports.Registry = (*fakeRegistry)(nil)

func newFakeRegistry() *fakeRegistry { return &fakeRegistry{slots: map[string]domain.Slot{}} }

func (r *fakeRegistry) List(ctx context.Context) ([]domain.Slot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []domain.Slot
	for _, id := range slices.Sorted(maps.Keys(r.slots)) {
		out = append(out, r.slots[id])
	}
	return out, nil
}

func (r *fakeRegistry) Get(ctx context.Context, id string) (domain.Slot, bool, error) {
	if err := ctx.Err(); err != nil {
		return domain.Slot{}, false, err
	}
	s, ok := r.get(id)
	return s, ok, nil
}

func (r *fakeRegistry) Put(ctx context.Context, slot domain.Slot) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if slot.ID == "" {
		return domain.Errorf(domain.EINVALID, "a slot needs an id")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.slots[slot.ID] = slot
	return nil
}

func (r *fakeRegistry) Delete(ctx context.Context, id string) error {
	if err := ctx.Err(); err != nil {
		return err // as database/sql would
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.slots, id)
	return nil
}

func (r *fakeRegistry) get(id string) (domain.Slot, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.slots[id]
	return s, ok
}

// fakeCodeLife is how long the fake's pairing codes are valid.
const fakeCodeLife = 160 * time.Second

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

var _ ports.Clock = (*fakeClock)(nil)

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// harness is a service wired to fresh fakes.
type harness struct {
	t     *testing.T
	svc   *Service
	wa    *fakeWhatsApp
	disk  *fakeDisk
	reg   *fakeRegistry
	clock *fakeClock
	cfg   Config
}

// newHarness returns fakes and a service over them, not yet started; the
// service is closed when the test ends.
func newHarness(t *testing.T, configure ...func(*Config)) *harness {
	t.Helper()
	disk := newFakeDisk()
	h := &harness{
		t:     t,
		disk:  disk,
		reg:   newFakeRegistry(),
		clock: &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)},
	}
	h.wa = &fakeWhatsApp{disk: disk, clock: h.clock}
	h.cfg = Config{
		WhatsApp:    h.wa,
		Sessions:    h.disk,
		Registry:    h.reg,
		Clock:       h.clock,
		DisplayName: "Chrome (Linux)",
		LoginWait:   5 * time.Second,
		UnlinkWait:  5 * time.Second,
	}
	for _, f := range configure {
		f(&h.cfg)
	}
	h.svc = New(h.cfg)
	t.Cleanup(func() { _ = h.svc.Close() })
	return h
}

// started is newHarness followed by Start.
func startedHarness(t *testing.T, configure ...func(*Config)) *harness {
	t.Helper()
	h := newHarness(t, configure...)
	if err := h.svc.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h
}

// link logs device id in by QR and has the phone pair it as jid, then waits
// until it is connected. It returns the connected client.
func (h *harness) link(id, jid string) *fakeClient {
	h.t.Helper()
	if _, err := h.svc.LoginQR(h.t.Context(), id); err != nil {
		h.t.Fatalf("LoginQR(%s): %v", id, err)
	}
	h.wa.last(h.t).pair(jid)
	h.waitState(id, domain.StateConnected)
	return h.wa.last(h.t)
}

// status returns the device's status, failing the test when it is missing.
func (h *harness) status(id string) domain.Status {
	h.t.Helper()
	st, err := h.svc.Get(context.Background(), id)
	if err != nil {
		h.t.Fatalf("Get(%s): %v", id, err)
	}
	return st
}

// waitFor waits, on the device's own change notifications, until ok holds
// for its status.
func (h *harness) waitFor(id, what string, ok func(domain.Status) bool) domain.Status {
	h.t.Helper()
	d, err := h.svc.lookup(id)
	if err != nil {
		h.t.Fatalf("lookup(%s): %v", id, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	for {
		d.mu.Lock()
		changed := d.changed
		d.mu.Unlock()
		st := d.status()
		if ok(st) {
			return st
		}
		select {
		case <-changed:
		case <-ctx.Done():
			h.t.Fatalf("device %s: gave up waiting for %s; status %+v", id, what, st)
		}
	}
}

func (h *harness) waitState(id string, state domain.State) domain.Status {
	h.t.Helper()
	return h.waitFor(id, "state "+string(state), func(st domain.Status) bool { return st.State == state })
}

// waitLimit bounds every wait: generous, because the machine is shared, but
// a test that reaches it has failed.
const waitLimit = 10 * time.Second

// eventually polls cond until it holds or waitLimit passes. It is for
// conditions on the fakes, which have no change notifications of their own.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// settle waits until the device's event loop has handled every event
// queued so far, so that a test can check that an event changed nothing
// (beyond the push name, which settle uses as its marker).
func (h *harness) settle(id string) {
	h.t.Helper()
	d, err := h.svc.lookup(id)
	if err != nil {
		h.t.Fatalf("lookup(%s): %v", id, err)
	}
	// The owner applies inputs one at a time, in order, and runs jobs in
	// order: once a ping posted now is answered, everything before it has
	// been applied and its jobs run.
	if _, err := d.call(context.Background(), func(op uint64) input { return ping{Op: op} }); err != nil {
		h.t.Fatalf("settle(%s): %v", id, err)
	}
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	if got := domain.ErrorCode(err); got != code {
		t.Fatalf("error %v: code %q, want %q", err, got, code)
	}
}

var (
	errBoom        = errors.New("boom") // a fault in the adapter itself
	errUnreachable = domain.Errorf(domain.EUNAVAILABLE, "could not reach WhatsApp")
)

func contains(s, sub string) bool { return strings.Contains(s, sub) }
