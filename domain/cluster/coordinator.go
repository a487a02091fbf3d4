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
	// Registered, when set, tells whether the registry holds a slot of
	// id. Route then takes no lease on demand for an id without one (a
	// typo, a deleted device): the call is served here, where the device
	// service answers that there is no such device, as a single gateway
	// does; a call that creates the device takes its lease through Claim.
	// nil: every id nobody holds is taken on demand.
	Registered func(ctx context.Context, id string) (bool, error)
	// OnDeliver, when set, is told each time Delivers changes: true when
	// this replica starts delivering the webhooks (it took their lease, or
	// renews again after an outage), false when it stops (fenced, lease
	// lost, draining). The event service's gate: on true, wake the
	// dispatchers (events.Hub.WakeDispatchers). Calls come one at a time,
	// in order, from whichever goroutine made the change; it must return
	// quickly and call nothing of the Coordinator's but Delivers.
	OnDeliver func(delivers bool)
	// WaitDeliveries, when set, returns once no webhook delivery of this
	// replica is in flight (events.Hub.WaitDeliveries). Drain calls it,
	// after Delivers turned false and before it releases the webhooks
	// lease, so that the next holder sends nothing this one is sending.
	WaitDeliveries func(ctx context.Context) error
	// DeliveryWait bounds that wait (default TTL/3): past it, the lease is
	// released anyway, and a delivery still in flight may be made twice.
	DeliveryWait time.Duration
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
	// skew is the database's clock minus ours, as the last round saw it.
	skew time.Duration
	// roundAt, when set, is when a round is due before the regular one:
	// just after another replica's heartbeat or lease lapses, so that
	// its devices move at once rather than up to a round later.
	roundAt time.Time
	// handedOff: devices this replica handed off, and when. Their calls go
	// to another replica for a while rather than back to this one.
	handedOff map[string]time.Time
	wake      chan struct{} // a round is wanted now (buffered, 1)

	// tellMu serializes the calls of Config.OnDeliver; told is the value
	// last given to it.
	tellMu sync.Mutex
	told   bool
}

// New returns a coordinator; it does nothing until Run.
func New(cfg Config) *Coordinator {
	cfg.TTL = cmp.Or(cfg.TTL, 15*time.Second)
	cfg.HandoffBatch = cmp.Or(cfg.HandoffBatch, 8)
	cfg.DeliveryWait = cmp.Or(cfg.DeliveryWait, cfg.TTL/3)
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

// Delivers tells whether this replica delivers the webhooks now: it holds
// the lease of ports.WebhooksLease, renews it, and is not draining. The
// event service's gate.
func (c *Coordinator) Delivers() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.held[ports.WebhooksLease]
	return ok && !c.fenced && !c.draining && !c.left
}

// tellDelivery calls Config.OnDeliver when Delivers changed since it last
// did. Every change of what Delivers reads is followed by a call of it.
func (c *Coordinator) tellDelivery() {
	if c.cfg.OnDeliver == nil {
		return
	}
	c.tellMu.Lock()
	defer c.tellMu.Unlock()
	if now := c.Delivers(); now != c.told {
		c.told = now
		c.cfg.OnDeliver(now)
	}
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

// ErrUnavailable is Route's answer while this replica runs no devices (its
// leases cannot be renewed) or is shutting down: the caller should try
// again shortly, possibly on another replica.
var ErrUnavailable = domain.Errorf(domain.EUNAVAILABLE, "this replica cannot reach the shared database and runs no devices until it can; try again")

// errDraining is Route's answer for a device nobody holds while this
// replica shuts down and knows no other replica to send it to.
var errDraining = domain.Errorf(domain.EUNAVAILABLE, "this replica is shutting down; try again")

// isUnavailable tells whether err says the database is unreachable.
func isUnavailable(err error) bool { return errors.Is(err, ports.ErrStoreUnavailable) }

// waitDeliveries starts waiting, at most DeliveryWait, for the webhook
// deliveries in flight to end, and returns where the wait reports. It
// reports at once when this replica does not hold the webhooks lease.
// Called once Delivers is false: nothing new starts meanwhile.
func (c *Coordinator) waitDeliveries(ctx context.Context) <-chan error {
	done := make(chan error, 1)
	c.mu.Lock()
	_, held := c.held[ports.WebhooksLease]
	c.mu.Unlock()
	if !held || c.cfg.WaitDeliveries == nil {
		done <- nil
		return done
	}
	go func() {
		wctx, cancel := context.WithTimeout(ctx, c.cfg.DeliveryWait)
		defer cancel()
		done <- c.cfg.WaitDeliveries(wctx)
	}()
	return done
}
