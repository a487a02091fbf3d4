// Package device is gowa's core: the service that owns every device slot,
// logs devices in by QR code or pairing code, keeps their WhatsApp sessions
// connected, restores them at start-up, logs them out and sends through them.
// It reaches the outside world only through the interfaces in ports.
package device

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Config is what the service needs. WhatsApp, Sessions and Registry are
// required; the rest have defaults.
type Config struct {
	WhatsApp ports.WhatsApp
	Sessions ports.SessionStore
	Registry ports.Registry
	Clock    ports.Clock
	// Events, when set, is told what devices do (live events): every
	// transition's event, and each message sent or received.
	Events ports.Events
	Logger *slog.Logger

	// DisplayName is shown on the phone for devices linked by pairing code
	// (--os).
	DisplayName string
	// RestoreConcurrency bounds how many stored sessions open and dial at
	// once (at start-up, and for reconnects and unlinks). Default 16.
	RestoreConcurrency int
	// LoginWait bounds how long a login call waits for WhatsApp's first QR
	// code or pairing code. Default 30 s.
	LoginWait time.Duration
	// UnlinkWait bounds how long logout waits for an offline device to come
	// online so that it can be unlinked on WhatsApp, and then for
	// WhatsApp's answer. Default 15 s.
	UnlinkWait time.Duration
	// SendWait bounds how long a send waits for a device that is
	// connecting (after a restart or a dropped connection) to come online,
	// rather than failing at once. Default 10 s.
	SendWait time.Duration
	// OnLogin, when set, is told the outcome of each login: method "qr" or
	// "code", outcome "success", "failure" or "expired". For metrics.
	OnLogin func(method domain.PairingMethod, outcome string)
	// Cluster: several replicas share the registry and the sessions, and
	// each device runs on the one replica holding its lease (domain/cluster
	// decides). Start then restores nothing: the devices run here are those
	// given to Adopt, until Drop hands them back. A login or Create makes
	// a slot only after Claim, and only when the registry does not hold
	// one already (another replica's device is never overwritten).
	Cluster bool
	// Claim, in cluster mode, takes the lease of a device about to be
	// created here (domain/cluster's Coordinator.Claim), so that no other
	// replica places it meanwhile; its error refuses the creation. It may
	// Adopt the device (a slot that exists after all).
	Claim func(ctx context.Context, id string) error
	// OnTransition, when set, is told every change of a device's state or
	// reason, exactly once, in order per device, from the device's owner
	// goroutine: it must not block (queue what it needs to do).
	OnTransition func(Transition)
}

// Transition is one change of a device's state or reason.
type Transition struct {
	DeviceID string
	From, To domain.State
	Reason   domain.Reason   // why it is in To
	Detail   string          // the same for people
	Identity domain.Identity // the linked account, zero when none
	At       time.Time
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Service owns the devices. Create it with New, call Start once, and Close
// it to disconnect every device without logging out.
//
// Each device has its own owner goroutine (see device and transition); the
// service's lock guards only the map of devices, and is never held while a
// device or the registry does I/O.
type Service struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // lives until Close; every device context derives from it
	cancel context.CancelFunc
	wg     sync.WaitGroup // device owners and their calls in flight
	sem    chan struct{}  // bounds sessions opening and dialling at once
	// closing is closed when Close begins: nothing starts dialling after.
	closing chan struct{}

	mu      sync.Mutex
	devices map[string]*device
	closed  bool
	// dropped names the devices Drop handed back and Adopt did not take
	// again: calls for them are told to try again, not that they do not
	// exist, and no login re-creates them here.
	dropped map[string]bool
}

// New returns a service; it does nothing until Start.
func New(cfg Config) *Service {
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	cfg.RestoreConcurrency = cmp.Or(cfg.RestoreConcurrency, 16)
	cfg.LoginWait = cmp.Or(cfg.LoginWait, 30*time.Second)
	cfg.UnlinkWait = cmp.Or(cfg.UnlinkWait, 15*time.Second)
	cfg.SendWait = cmp.Or(cfg.SendWait, 10*time.Second)
	cfg.DisplayName = cmp.Or(cfg.DisplayName, "gowa")
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
		sem:     make(chan struct{}, cfg.RestoreConcurrency),
		closing: make(chan struct{}),
		devices: make(map[string]*device),
		dropped: make(map[string]bool),
	}
}

// Close disconnects every device, without logging out, and waits for their
// background work to end. Sessions stay on disk for the next start.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	devs := s.sortedDevices()
	s.mu.Unlock()

	for _, d := range devs {
		d.post(cmdShutdown{})
	}
	for _, d := range devs {
		<-d.done
	}
	s.cancel()
	s.wg.Wait()
	return nil
}

// List returns the status of every device, ordered by id.
func (s *Service) List(ctx context.Context) []domain.Status {
	s.mu.Lock()
	devs := s.sortedDevices()
	s.mu.Unlock()
	out := make([]domain.Status, 0, len(devs))
	for _, d := range devs {
		out = append(out, d.status())
	}
	return out
}

// CountByState counts the devices in each state, for metrics.
func (s *Service) CountByState() map[string]int {
	counts := map[string]int{}
	for _, st := range s.List(context.Background()) {
		counts[string(st.State)]++
	}
	return counts
}

// Get returns one device's status.
func (s *Service) Get(ctx context.Context, id string) (domain.Status, error) {
	d, err := s.lookup(id)
	if err != nil {
		return domain.Status{}, err
	}
	return d.status(), nil
}

// Create creates an empty device slot. An empty id gets a generated one.
func (s *Service) Create(ctx context.Context, id string) (domain.Status, error) {
	defer s.syncEvents(ctx)
	if id == "" {
		id = "device-" + randomHex(4)
	}
	if err := domain.ValidateDeviceID(id); err != nil {
		return domain.Status{}, err
	}
	d, created, err := s.getOrCreate(ctx, id)
	if err != nil {
		return domain.Status{}, err
	}
	if !created {
		return domain.Status{}, domain.Errorf(domain.ECONFLICT, "device %s already exists", id)
	}
	return d.status(), nil
}

// Delete unlinks the device on WhatsApp if it is linked, deletes its
// session and removes the slot. When WhatsApp cannot be reached the device
// is still deleted here, and the returned warning says the phone may still
// list it. When its files cannot be removed, the slot stays (logged out,
// with the files) and the error says what failed.
func (s *Service) Delete(ctx context.Context, id string) (warning string, err error) {
	d, err := s.lookup(id)
	if err != nil {
		return "", err
	}
	ctx, cancel := s.unlinkContext(ctx)
	defer cancel()
	defer s.syncEvents(ctx)
	r, err := d.call(ctx, func(op uint64) input { return cmdDelete{Op: op} })
	if err != nil {
		return "", unlinkWaitError(id, err)
	}
	return r.Warning, nil
}

// Logout unlinks the device on WhatsApp, so that it disappears from the
// phone's linked devices, and deletes its session; the slot stays, as
// logged_out. A pairing under way is cancelled instead. A device that never
// logged in gets ECONFLICT; one already logged out gets its status. When
// WhatsApp cannot be reached the session is kept and the error is
// EUNAVAILABLE.
func (s *Service) Logout(ctx context.Context, id string) (domain.Status, error) {
	d, err := s.lookup(id)
	if err != nil {
		return domain.Status{}, err
	}
	ctx, cancel := s.unlinkContext(ctx)
	defer cancel()
	defer s.syncEvents(ctx)
	if _, err := d.call(ctx, func(op uint64) input { return cmdLogout{Op: op} }); err != nil {
		return domain.Status{}, unlinkWaitError(id, err)
	}
	return d.status(), nil
}

// Reconnect closes the device's connection and connects again with its
// stored session.
func (s *Service) Reconnect(ctx context.Context, id string) (domain.Status, error) {
	d, err := s.lookup(id)
	if err != nil {
		return domain.Status{}, err
	}
	defer s.syncEvents(ctx)
	if _, err := d.call(ctx, func(op uint64) input { return cmdReconnect{Op: op} }); err != nil {
		return domain.Status{}, err
	}
	return d.status(), nil
}

// QR is the QR code a login shows.
type QR struct {
	Text      string
	ExpiresAt time.Time
}

// PairingCode is the code a login by phone number shows.
type PairingCode struct {
	Code      string
	ExpiresAt time.Time
}

// LoginQR starts QR pairing for device id, creating the slot if needed, and
// returns the QR code currently shown. While a pairing is under way it
// returns the current code and never opens another connection. A device
// that is logged in gets ECONFLICT.
func (s *Service) LoginQR(ctx context.Context, id string) (QR, error) {
	defer s.syncEvents(ctx)
	d, _, err := s.getOrCreate(ctx, id)
	if err != nil {
		return QR{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.LoginWait)
	defer cancel()
	r, err := d.call(wctx, func(op uint64) input { return cmdLogin{Op: op, Method: domain.PairingQR} })
	if err != nil {
		return QR{}, loginWaitError(ctx, err, "WhatsApp sent no QR code in time")
	}
	return QR{Text: r.QR, ExpiresAt: r.Expires}, nil
}

// LoginCode asks WhatsApp for a pairing code for phone on device id,
// creating the slot if needed. A repeated call for the same phone while the
// code is valid returns the same code; a QR pairing under way is reused.
func (s *Service) LoginCode(ctx context.Context, id, phone string) (PairingCode, error) {
	defer s.syncEvents(ctx)
	digits, err := domain.NormalizePhone(phone)
	if err != nil {
		return PairingCode{}, err
	}
	d, _, err := s.getOrCreate(ctx, id)
	if err != nil {
		return PairingCode{}, err
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.LoginWait)
	defer cancel()
	r, err := d.call(wctx, func(op uint64) input { return cmdLogin{Op: op, Method: domain.PairingCode, Phone: digits} })
	if err != nil {
		return PairingCode{}, loginWaitError(ctx, err, "WhatsApp gave no pairing code in time")
	}
	return PairingCode{Code: r.Code, ExpiresAt: r.Expires}, nil
}

// loginWaitError turns the end of a login's wait into the caller's error:
// its own context's, or ETIMEOUT when LoginWait ran out.
func loginWaitError(ctx context.Context, err error, timeout string) error {
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return domain.Errorf(domain.ETIMEOUT, "%s", timeout)
	}
	return err
}

// unlinkContext bounds the wait of a logout or delete: it goes on if the
// caller hangs up (the device finishes the unlink either way, and the
// caller gets the outcome). The device answers within its own deadlines
// (UnlinkWait to come online, UnlinkWait for WhatsApp's answer, then local
// work); this bound is only a safety net, with room for a busy disk.
func (s *Service) unlinkContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*s.cfg.UnlinkWait+30*time.Second)
}

// unlinkWaitError is the error of a logout or delete whose safety net ran
// out: the unlink goes on, and the device's state will say how it ended.
func unlinkWaitError(id string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return domain.Errorf(domain.EUNAVAILABLE, "the unlink of device %s did not finish in time; it goes on, see the device's state", id)
	}
	return err
}

// lookup returns the device with id, or an ENOTFOUND error.
func (s *Service) lookup(id string) (*device, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	d, ok := s.devices[id]
	if !ok {
		if s.dropped[id] {
			return nil, stoppedError(id, true)
		}
		return nil, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	return d, nil
}

// getOrCreate returns the device with id, creating and registering its slot
// when it does not exist. The registry is written outside the service's
// lock; should it fail, the new device goes again.
func (s *Service) getOrCreate(ctx context.Context, id string) (*device, bool, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	if d, ok := s.devices[id]; ok {
		s.mu.Unlock()
		return d, false, nil
	}
	if s.dropped[id] && (!s.cfg.Cluster || s.cfg.Claim == nil) {
		s.mu.Unlock()
		return nil, false, stoppedError(id, true)
	}
	if s.cfg.Cluster {
		// A claim of a device dropped here takes it back (Adopt).
		s.mu.Unlock()
		if d, err := s.claim(ctx, id); d != nil || err != nil {
			return d, false, err
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, false, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
		}
		if d, ok := s.devices[id]; ok {
			s.mu.Unlock()
			return d, false, nil
		}
		if s.dropped[id] {
			s.mu.Unlock()
			return nil, false, stoppedError(id, true)
		}
	}
	slot := domain.Slot{ID: id, CreatedAt: s.cfg.Clock.Now()}
	d := s.addLocked(slot, machine{ID: id, State: domain.StateDisconnected, Since: slot.CreatedAt})
	s.mu.Unlock()
	if err := s.cfg.Registry.Put(ctx, slot); err != nil {
		d.post(cmdShutdown{})
		s.forget(d)
		return nil, false, domain.Wrap(domain.EINTERNAL, err, "save device slot")
	}
	// device.created, once the slot is recorded; the caller's command
	// (a login) follows it in the device's inbox. A caller who hangs up
	// stops waiting, not the device.
	if _, err := d.call(ctx, func(op uint64) input { return created{Op: op} }); err != nil && ctx.Err() == nil {
		return nil, false, err
	}
	return d, true, nil
}

// addLocked makes the device for slot; its owner starts with the first
// input posted to it. s.mu must be held.
func (s *Service) addLocked(slot domain.Slot, m machine) *device {
	d := newDevice(s, slot, m)
	s.devices[slot.ID] = d
	return d
}

// forget removes d from the service, if it is still the device of its id.
func (s *Service) forget(d *device) {
	s.mu.Lock()
	if s.devices[d.id] == d {
		delete(s.devices, d.id)
	}
	s.mu.Unlock()
}

// transitioned is called by a device's owner on every change of state or
// reason.
func (s *Service) transitioned(id string, from, to machine) {
	if s.cfg.OnTransition == nil {
		return
	}
	tr := Transition{DeviceID: id, From: from.State, To: to.State, Reason: to.Reason, Detail: to.Detail, At: to.Since}
	if to.JID != "" {
		tr.Identity = to.Identity
	}
	s.cfg.OnTransition(tr)
}

// sortedDevices returns the devices ordered by id. s.mu must be held.
func (s *Service) sortedDevices() []*device {
	devs := make([]*device, 0, len(s.devices))
	for _, d := range s.devices {
		devs = append(devs, d)
	}
	slices.SortFunc(devs, func(a, b *device) int { return cmp.Compare(a.id, b.id) })
	return devs
}

func (s *Service) observeLogin(method domain.PairingMethod, outcome string) {
	if s.cfg.OnLogin != nil {
		s.cfg.OnLogin(method, outcome)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
