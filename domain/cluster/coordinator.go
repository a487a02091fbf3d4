// Package cluster runs one replica's share of the devices when several
// gateways share one database. Its Coordinator keeps this replica's
// heartbeat and leases (ports.Leases), starts and stops devices as it
// gains and gives up their leases (Devices: the device service in cluster
// mode), spreads the devices fairly over the live replicas, and tells the
// HTTP edge where each device runs (Route).
//
// The one rule everything here serves: a device runs on at most one
// replica. A replica runs a device only while it holds the device's lease,
// and stops it before the lease can lapse: when its last successful
// renewal started more than 2/3 of the lease time ago, it drops every
// device at once (and answers "unavailable" to commands) without waiting
// for the database to say anything.
package cluster

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Devices is what the coordinator starts and stops: the device service in
// cluster mode (domain/device.Service).
type Devices interface {
	// Adopt starts device id here (restoring its session); ENOTFOUND when
	// the registry has no such slot (yet). A running device is left alone.
	Adopt(ctx context.Context, id string) error
	// Drop stops device id here without logging out, and waits for it.
	Drop(ctx context.Context, id string) error
	// Get returns a running device's status (ENOTFOUND when it does not
	// run here): devices pairing or unlinking are not handed off.
	Get(ctx context.Context, id string) (domain.Status, error)
}

// Config is what a Coordinator needs. Leases and Devices are required.
type Config struct {
	Leases  ports.Leases
	Devices Devices
	// Addr is this replica's internal URL (--advertise-url), where other
	// replicas forward the calls for the devices it runs.
	Addr string
	// TTL is the lease time (--lease-ttl). Default 15 s. Leases are renewed
	// every TTL/3; devices stop when no renewal succeeded for 2/3 of it.
	TTL time.Duration
	// Wake, when set, starts a placement round at once when it receives
	// (the database's NOTIFY gowa_placement: another replica joined, left
	// or handed devices off).
	Wake <-chan struct{}
	// Notify, when set, wakes the other replicas' placement (NOTIFY
	// gowa_placement). It is called after a handoff and on Drain.
	Notify func(ctx context.Context) error
	// HandoffBatch is the least number of devices one round hands off to
	// replicas below their share (a round hands off a quarter of the
	// share when that is more). Default 8. While excess remains, the next
	// round comes after TTL/10 rather than TTL/3.
	HandoffBatch int
	Logger       *slog.Logger
}

// entry is one lease this replica holds.
type entry struct {
	adopted bool      // the device runs here
	since   time.Time // when the lease was acquired (local clock)
}

// Coordinator is one replica's side of the cluster. Create it with New,
// run it with Run, and Drain it before the process exits.
type Coordinator struct {
	cfg  Config
	log  *slog.Logger
	self string

	// opMu serializes what changes the leases held: placement rounds,
	// on-demand acquisitions, Drain. The watchdog never takes it: it must
	// stop devices even while a round waits for an unreachable database.
	opMu sync.Mutex
	// fenceMu is held by the watchdog while it stops every device: a
	// renewal that succeeds meanwhile waits for it before devices start
	// again, so that no drop of the watchdog's lands after a new start.
	fenceMu sync.Mutex

	mu       sync.Mutex
	held     map[string]*entry // by device id, ports.WebhooksLease included
	lastOK   time.Time         // when the last successful renewal started
	fenced   bool              // renewals failed too long: no device runs
	draining bool
	left     bool
	renewed  chan struct{} // closed and replaced when lastOK moves
	// replicas are the live replicas as the last round saw them, and
	// counts how many devices each held.
	replicas []ports.Replica
	counts   map[string]int
	// beat is when the last heartbeat was sent (local clock), to relate
	// the database's clock to ours.
	beat time.Time
	// roundAt, when set, is when a round is due before the regular one:
	// just after another replica's heartbeat or lease lapses, so that
	// its devices move at once rather than up to a round later.
	roundAt time.Time
	// handedOff: devices this replica handed off, and when. Their calls go
	// to another replica for a while rather than back to this one.
	handedOff map[string]time.Time
	wake      chan struct{} // a round is wanted now (buffered, 1)
}

// New returns a coordinator; it does nothing until Run.
func New(cfg Config) *Coordinator {
	cfg.TTL = cmp.Or(cfg.TTL, 15*time.Second)
	cfg.HandoffBatch = cmp.Or(cfg.HandoffBatch, 8)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Coordinator{
		cfg:       cfg,
		log:       cfg.Logger,
		self:      cfg.Leases.Self(),
		held:      map[string]*entry{},
		handedOff: map[string]time.Time{},
		renewed:   make(chan struct{}),
		wake:      make(chan struct{}, 1),
		// Nothing runs before the first renewal; the watchdog counts from
		// the start.
		lastOK: time.Now(),
	}
}

// Self is this replica's id.
func (c *Coordinator) Self() string { return c.self }

// Run keeps the heartbeat, the leases and the placement going until ctx
// ends: a heartbeat at once, a first placement TTL/10 later, then a round
// every TTL/3 (with some jitter, so that
// replicas started together do not race every time) and whenever Wake
// says. Devices still running when it returns stay running: call Drain
// first to hand them over.
func (c *Coordinator) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.watchdog(ctx)
	}()
	defer wg.Wait()
	// The first round only joins: replicas started together (a cold
	// start of a deployment) then see each other before placing, rather
	// than the first one taking every device and handing most over.
	first := true
	for {
		next := c.interval()
		if !c.round(ctx, !first) || first {
			next = c.cfg.TTL / 10 // soon: the devices stop at 2/3 TTL
		}
		first = false
		c.mu.Lock()
		if at := time.Until(c.roundAt); !c.roundAt.IsZero() && at < next {
			next = max(at, 0)
		}
		c.roundAt = time.Time{}
		c.mu.Unlock()
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-t.C:
		case <-c.wake:
			t.Stop()
		case <-c.cfg.Wake:
			t.Stop()
		}
	}
}

// interval is the time to the next round: TTL/3, less up to a tenth.
func (c *Coordinator) interval() time.Duration {
	base := c.cfg.TTL / 3
	return base - time.Duration(rand.Int64N(int64(base/10)+1))
}

// Wake asks for a placement round now.
func (c *Coordinator) Wake() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// staleAfter is how long after the start of the last successful renewal
// the devices stop: 2/3 of the lease time, leaving a third for the drops
// to finish before another replica can take the leases.
func (c *Coordinator) staleAfter() time.Duration { return c.cfg.TTL * 2 / 3 }

// watchdog stops every device when no renewal has succeeded for too long.
// It runs apart from the rounds, which may be stuck on the database.
func (c *Coordinator) watchdog(ctx context.Context) {
	for {
		c.mu.Lock()
		deadline := c.lastOK.Add(c.staleAfter())
		renewed := c.renewed
		c.mu.Unlock()
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-renewed:
			t.Stop()
			continue
		case <-t.C:
		}
		c.fenceMu.Lock()
		c.mu.Lock()
		if c.left {
			// Drained: nothing runs, nothing is renewed any more.
			c.mu.Unlock()
			c.fenceMu.Unlock()
			<-ctx.Done()
			return
		}
		if c.fenced || c.lastOK.Add(c.staleAfter()).After(time.Now()) {
			c.mu.Unlock()
			c.fenceMu.Unlock()
			// Renewed meanwhile, or already fenced: wait for the next
			// renewal.
			select {
			case <-ctx.Done():
				return
			case <-renewed:
			}
			continue
		}
		c.fenced = true
		last := c.lastOK
		var running []string
		for id, e := range c.held {
			if e.adopted {
				running = append(running, id)
				e.adopted = false
			}
		}
		c.mu.Unlock()
		c.log.Error("the lease renewals failed for too long: stopping every device until the database answers again",
			"devices", len(running), "last_renewal", last)
		c.dropAll(ctx, running)
		c.fenceMu.Unlock()
	}
}

// dropAll stops the devices named, several at a time.
func (c *Coordinator) dropAll(ctx context.Context, ids []string) {
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, id := range ids {
		if id == ports.WebhooksLease {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := c.cfg.Devices.Drop(context.WithoutCancel(ctx), id); err != nil {
				c.log.Error("stopping a device", "device_id", id, "err", err)
			}
		}()
	}
	wg.Wait()
}

// Fenced tells whether this replica runs no devices because it could not
// renew its leases; commands then get ErrUnavailable (see Route).
func (c *Coordinator) Fenced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fenced
}

// Delivers tells whether this replica delivers the webhooks now: it holds
// the lease of ports.WebhooksLease, renews it, and is not draining. The
// event service's gate.
func (c *Coordinator) Delivers() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[ports.WebhooksLease]
	return ok && !c.fenced && !c.draining && !c.left
}

// Held lists the devices whose lease this replica holds (the webhooks
// lease aside), for status and tests.
func (c *Coordinator) Held() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.held))
	for id := range c.held {
		if id != ports.WebhooksLease {
			out = append(out, id)
		}
	}
	return out
}

// storeCtx bounds one call to the database: a stalled connection must
// not hold a round for long, so that a renewal is tried again well before
// the devices have to stop.
func (c *Coordinator) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.TTL/6)
}

// round is one placement round: heartbeat, renewal, then (place)
// placement. It tells whether the renewal succeeded.
func (c *Coordinator) round(ctx context.Context, place bool) bool {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if left || ctx.Err() != nil {
		return true
	}
	if err := c.renew(ctx); err != nil {
		c.log.Warn("lease renewal failed", "err", err)
		return false
	}
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	if draining || !place {
		return true
	}
	c.adoptPending(ctx)
	if err := c.place(ctx); err != nil {
		c.log.Warn("placement round failed", "err", err)
	}
	return true
}

// renew sends the heartbeat and renews the leases. Leases found lost are
// dropped at once; on success the watchdog's clock restarts and a fenced
// replica runs devices again (adoptPending restarts those still held).
func (c *Coordinator) renew(ctx context.Context) error {
	start := time.Now()
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	if err := c.cfg.Leases.Heartbeat(sctx, c.cfg.Addr, c.cfg.TTL); err != nil {
		return err
	}
	c.mu.Lock()
	c.beat = start
	c.mu.Unlock()
	ids, err := c.cfg.Leases.Renew(sctx, c.cfg.TTL)
	if err != nil {
		return err
	}
	still := make(map[string]bool, len(ids))
	for _, id := range ids {
		still[id] = true
	}
	var lost []string
	c.fenceMu.Lock()
	defer c.fenceMu.Unlock()
	c.mu.Lock()
	for id, e := range c.held {
		if !still[id] {
			delete(c.held, id)
			if e.adopted {
				lost = append(lost, id)
			}
		}
	}
	for id := range still {
		if _, ok := c.held[id]; !ok {
			// Acquired by a call whose answer did not arrive.
			c.held[id] = &entry{since: start}
		}
	}
	c.lastOK = start
	close(c.renewed)
	c.renewed = make(chan struct{})
	wasFenced := c.fenced
	c.fenced = false
	c.mu.Unlock()
	if wasFenced {
		c.log.Info("lease renewals work again", "leases", len(ids))
	}
	if len(lost) > 0 {
		c.log.Warn("leases lost (they lapsed): stopping their devices", "devices", len(lost))
		c.dropAll(ctx, lost)
	}
	return nil
}

// adoptPending starts the devices held but not running: acquired while
// their slot did not exist yet, stopped by the watchdog, or deleted here.
// A lease whose device has had no slot for a whole lease time is
// released.
func (c *Coordinator) adoptPending(ctx context.Context) {
	c.mu.Lock()
	var pending, running []string
	for id, e := range c.held {
		switch {
		case id == ports.WebhooksLease:
		case e.adopted:
			running = append(running, id)
		default:
			pending = append(pending, id)
		}
	}
	c.mu.Unlock()
	// A device deleted through the API stops by itself: its lease goes.
	// (One that stopped for any other reason starts again.)
	for _, id := range running {
		if _, err := c.cfg.Devices.Get(ctx, id); err != nil {
			c.mu.Lock()
			if e := c.held[id]; e != nil {
				e.adopted = false
			}
			c.mu.Unlock()
			pending = append(pending, id)
		}
	}
	var release []string
	for _, id := range pending {
		err := c.adopt(ctx, id)
		if domain.ErrorCode(err) != domain.ENOTFOUND {
			continue
		}
		c.mu.Lock()
		e := c.held[id]
		old := e != nil && time.Since(e.since) > c.cfg.TTL
		if old {
			delete(c.held, id)
		}
		c.mu.Unlock()
		if old {
			_ = c.cfg.Devices.Drop(ctx, id)
			release = append(release, id)
		}
	}
	if len(release) > 0 {
		sctx, cancel := c.storeCtx(ctx)
		defer cancel()
		if err := c.cfg.Leases.Release(sctx, release...); err != nil {
			c.log.Warn("releasing the leases of devices that do not exist", "err", err)
		}
	}
}

// adopt starts a held device, unless the watchdog stopped everything
// meanwhile: every device it marks running is one the watchdog will see.
func (c *Coordinator) adopt(ctx context.Context, id string) error {
	if c.Fenced() {
		return ErrUnavailable
	}
	err := c.cfg.Devices.Adopt(ctx, id)
	c.mu.Lock()
	e, held := c.held[id]
	fenced := c.fenced || !held
	if err == nil && !fenced {
		e.adopted = true
	}
	c.mu.Unlock()
	if err == nil && fenced {
		_ = c.cfg.Devices.Drop(context.WithoutCancel(ctx), id)
		return ErrUnavailable
	}
	if err != nil && domain.ErrorCode(err) != domain.ENOTFOUND {
		c.log.Warn("starting a device", "device_id", id, "err", err)
	}
	return err
}

// ErrUnavailable is Route's answer while this replica runs no devices (its
// leases cannot be renewed) or is shutting down: the caller should try
// again shortly, possibly on another replica.
var ErrUnavailable = domain.Errorf(domain.EUNAVAILABLE, "this replica cannot reach the shared database and runs no devices until it can; try again")

// errDraining is Route's answer for a device nobody holds while this
// replica shuts down and knows no other replica to send it to.
var errDraining = domain.Errorf(domain.EUNAVAILABLE, "this replica is shutting down; try again")

// isUnavailable tells whether err says the database is unreachable.
func isUnavailable(err error) bool { return errors.Is(err, ports.ErrStoreUnavailable) }
