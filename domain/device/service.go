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
	// Events, when set, is told of every device transition (live events).
	Events ports.Events
	Logger *slog.Logger

	// DisplayName is shown on the phone for devices linked by pairing code
	// (--os).
	DisplayName string
	// RestoreConcurrency bounds how many stored sessions connect at once at
	// start-up. Default 16.
	RestoreConcurrency int
	// LoginWait bounds how long a login call waits for WhatsApp's first QR
	// code. Default 30 s.
	LoginWait time.Duration
	// UnlinkWait bounds how long logout waits for an offline device to come
	// online so that it can be unlinked on WhatsApp. Default 15 s.
	UnlinkWait time.Duration
	// SendWait bounds how long a send waits for a device that is
	// connecting (after a restart or a dropped connection) to come online,
	// rather than failing at once. Default 10 s.
	SendWait time.Duration
	// CodeValidity is how long a pairing code stays usable: whatsmeow keeps
	// the pairing connection open for its whole QR series (60 s + 5 × 20 s).
	CodeValidity time.Duration
	// OnLogin, when set, is told the outcome of each login: method "qr" or
	// "code", outcome "success", "failure" or "expired". For metrics.
	OnLogin func(method domain.PairingMethod, outcome string)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// Service owns the devices. Create it with New, call Start once, and Close
// it to disconnect every device without logging out.
type Service struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // lives until Close; every device context derives from it
	cancel context.CancelFunc
	wg     sync.WaitGroup // device event loops and background restores

	mu      sync.Mutex
	devices map[string]*device
	closed  bool
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
	cfg.CodeValidity = cmp.Or(cfg.CodeValidity, 160*time.Second)
	cfg.DisplayName = cmp.Or(cfg.DisplayName, "gowa")
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{
		cfg:     cfg,
		log:     cfg.Logger,
		ctx:     ctx,
		cancel:  cancel,
		devices: make(map[string]*device),
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
	devs := s.sortedDevices()
	s.mu.Unlock()

	s.cancel()
	for _, d := range devs {
		d.shutdown()
	}
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
// list it.
func (s *Service) Delete(ctx context.Context, id string) (warning string, err error) {
	defer s.syncEvents(ctx)
	d, err := s.acquire(id)
	if err != nil {
		return "", err
	}
	defer d.op.Unlock()
	ctx, cancel := s.unlinkContext(ctx)
	defer cancel()
	d.cancelPairingLocked("device deleted")
	if d.snapshot().loggedIn {
		if err := d.unlinkLocked(ctx); err != nil {
			if domain.ErrorCode(err) == domain.EINTERNAL {
				return "", err
			}
			warning = "WhatsApp could not be reached, so the phone may still list this device"
			s.log.Warn("device deleted without unlinking it on WhatsApp", "device_id", id, "err", err)
			d.dropSessionLocked(ctx, domain.StateDisconnected, "device deleted")
			d.emitReason(domain.EventDeviceLoggedOut, domain.ReasonDeleted, "WhatsApp could not be reached; the phone may still list the device")
		}
	}
	d.closeClientLocked()
	if err := s.cfg.Registry.Delete(ctx, id); err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "delete device slot")
	}
	s.mu.Lock()
	if s.devices[id] == d {
		delete(s.devices, id)
	}
	s.mu.Unlock()
	d.stop()
	d.emit(domain.EventDeviceDeleted, nil)
	return warning, nil
}

// lookup returns the device with id, or an ENOTFOUND error.
func (s *Service) lookup(id string) (*device, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.devices[id]
	if !ok {
		return nil, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	return d, nil
}

// getOrCreate returns the device with id, creating and registering its slot
// when it does not exist.
func (s *Service) getOrCreate(ctx context.Context, id string) (*device, bool, error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	if d, ok := s.devices[id]; ok {
		return d, false, nil
	}
	slot := domain.Slot{ID: id, CreatedAt: s.cfg.Clock.Now()}
	if err := s.cfg.Registry.Put(ctx, slot); err != nil {
		return nil, false, domain.Wrap(domain.EINTERNAL, err, "save device slot")
	}
	d := s.addLocked(slot)
	d.emit(domain.EventDeviceCreated, nil)
	return d, true, nil
}

// addLocked makes the in-memory device for slot and starts its event loop.
// s.mu must be held.
func (s *Service) addLocked(slot domain.Slot) *device {
	d := newDevice(s, slot)
	s.devices[slot.ID] = d
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		d.eventLoop()
	}()
	return d
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

// errShutdown is returned to waits cut short by Close.
var errShutdown = errors.New("service closed")

// acquire looks device id up and takes its d.op, which the caller must
// release. A device deleted while the caller waited for d.op is reported as
// not found (or the service as shutting down), and d.op is not held.
func (s *Service) acquire(id string) (*device, error) {
	d, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	d.op.Lock()
	if err := d.goneErr(); err != nil {
		d.op.Unlock()
		return nil, err
	}
	return d, nil
}

// unlinkContext is the context of a logout or delete once it has begun: it
// goes on if the caller hangs up, so that no device is left half unlinked,
// and is bounded instead by twice UnlinkWait (reaching WhatsApp, then its
// answer).
func (s *Service) unlinkContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), 2*s.cfg.UnlinkWait)
}
