package cluster

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Route tells the HTTP edge where a call for device id is handled. local:
// here (this replica holds the lease, and the device runs here or is about
// to be created here; or, with Config.Registered, no such device exists and
// nobody holds it: the call is answered here). Otherwise addr is the
// replica to forward it to, and retryAfter how long until the lease can
// move, for the answer to give when that replica cannot be reached. A
// device nobody holds is acquired here on demand (a new device is leased
// to the replica whose call creates it, through Claim), except while this
// replica drains: it then sends the call to another replica, which
// acquires it.
//
// err is ErrUnavailable (EUNAVAILABLE) when this replica cannot tell or
// cannot run the device now: it cannot reach the database, or it is
// shutting down and knows no other replica. retryAfter then says when to
// try again.
func (c *Coordinator) Route(ctx context.Context, id string) (local bool, addr string, retryAfter time.Duration, err error) {
	return c.route(ctx, id, false, false)
}

// RouteForwarded is Route for a call another replica forwarded here (it is
// never forwarded again): a free device this replica handed off is taken
// all the same once the handoff is a tenth of the lease old, since the
// replica that chose this one for it may have handed it off too, and each
// sending the other its calls would leave the device to nobody until the
// handoffs are a lease time old. (A call forwarded to this replica as the
// device's holder just before the handoff does not take it back.)
func (c *Coordinator) RouteForwarded(ctx context.Context, id string) (local bool, addr string, retryAfter time.Duration, err error) {
	return c.route(ctx, id, false, true)
}

// route is Route for a call that creates device id (Claim) or not, and
// forwarded here by another replica or not. A call that does not create
// it, for a device nobody holds and the registry lacks, is served here
// without a lease (Config.Registered).
func (c *Coordinator) route(ctx context.Context, id string, creates, forwarded bool) (local bool, addr string, retryAfter time.Duration, err error) {
	if err := domain.ValidateDeviceID(id); err != nil {
		return false, "", 0, err
	}
	retry := c.cfg.TTL / 3
	c.mu.Lock()
	fenced, draining, left := c.fenced, c.draining, c.left
	e, held := c.held[id]
	adopted := held && e.adopted
	handed, wasHanded := c.handedOff[id]
	if wasHanded && time.Since(handed) > c.cfg.TTL {
		delete(c.handedOff, id)
		wasHanded = false
	}
	if forwarded && wasHanded && time.Since(handed) > c.takeBackAfter() {
		// Chosen for the device by the replica that forwarded the call.
		wasHanded = false
	}
	c.mu.Unlock()
	switch {
	case fenced:
		return false, "", retry, ErrUnavailable
	case adopted && !left:
		return true, "", 0, nil
	case held && !left:
		// Held, not running: a slot about to be created, or a device
		// whose start failed or has not happened yet. Start it now.
		return c.acquire(ctx, id, forwarded, "held, not running")
	}

	lease, live, err := c.owner(ctx, id)
	if err != nil {
		return false, "", retry, err
	}
	if live && lease.Holder == c.self {
		// Held in the database but not here: being handed off by the
		// round under way (wait for it to end), or acquired by a call
		// whose answer was lost (take it up).
		c.opMu.Lock() // empty: only waits for the round under way
		c.opMu.Unlock()
		if lease, live, err = c.owner(ctx, id); err != nil {
			return false, "", retry, err
		}
		if live && lease.Holder == c.self {
			return c.acquire(ctx, id, forwarded, "leased here, not known")
		}
	}
	if live {
		return c.remote(lease)
	}
	if draining || left || wasHanded {
		if other := c.other(id); other != "" {
			return false, other, retry, nil
		}
		if draining || left {
			return false, "", retry, errDraining
		}
	}
	if !creates && c.cfg.Registered != nil {
		sctx, cancel := c.storeCtx(ctx)
		ok, err := c.cfg.Registered(sctx, id)
		cancel()
		if err != nil {
			return false, "", retry, c.storeError(err)
		}
		if !ok {
			return true, "", 0, nil // no such device: nothing to run, anywhere
		}
	}
	return c.acquire(ctx, id, forwarded, "free")
}

// owner reads id's lease.
func (c *Coordinator) owner(ctx context.Context, id string) (ports.Lease, bool, error) {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	lease, live, err := c.cfg.Leases.Owner(sctx, id)
	if err != nil {
		return lease, live, c.storeError(err)
	}
	return lease, live, nil
}

// acquire takes the lease of a device nobody holds, on demand, and starts
// the device here; for a device held already, it only starts it.
func (c *Coordinator) acquire(ctx context.Context, id string, forwarded bool, why string) (bool, string, time.Duration, error) {
	retry := c.cfg.TTL / 3
	c.opMu.Lock()
	defer c.opMu.Unlock()
	c.mu.Lock()
	fenced, draining := c.fenced, c.draining || c.left
	e, held := c.held[id]
	adopted := held && e.adopted
	c.mu.Unlock()
	switch {
	case fenced:
		return false, "", retry, ErrUnavailable
	case adopted: // a round started it meanwhile
		return true, "", 0, nil
	case draining && !held:
		return false, "", retry, errDraining
	}
	if !held && c.gaveUp(id, forwarded) {
		// Handed off by this replica (while the call waited, perhaps):
		// another replica takes it.
		if other := c.other(id); other != "" {
			return false, other, retry, nil
		}
	}
	if !held {
		sctx, cancel := c.storeCtx(ctx)
		lease, ok, err := c.cfg.Leases.Acquire(sctx, id, c.cfg.TTL)
		cancel()
		if err != nil {
			return false, "", retry, c.storeError(err)
		}
		if !ok {
			return c.remote(lease)
		}
		c.mu.Lock()
		c.held[id] = &entry{since: time.Now()}
		c.mu.Unlock()
		c.log.Info("took a device nobody held for a call", "device_id", id, "why", why)
	}
	// The device starts whether or not the caller waits for it.
	switch err := c.adopt(context.WithoutCancel(ctx), id); {
	case err == nil, domain.ErrorCode(err) == domain.ENOTFOUND:
		// Running, or a slot that a login is about to create here.
		return true, "", 0, nil
	default:
		// Held, not running: the next round starts it.
		return false, "", time.Second, domain.Wrap(domain.EUNAVAILABLE, err, "device "+id+" is starting; try again")
	}
}

// remote answers for a device another replica holds.
func (c *Coordinator) remote(lease ports.Lease) (bool, string, time.Duration, error) {
	c.mu.Lock()
	skew := c.skew
	c.mu.Unlock()
	until := min(max(time.Until(lease.Expires.Add(-skew)), time.Second), c.cfg.TTL)
	if lease.Addr == "" {
		// Its holder left, or died and its heartbeat lapsed: the lease
		// lapses soon.
		return false, "", until, errMoving
	}
	return false, lease.Addr, until, nil
}

// other picks another live replica for a device this one will not take:
// the one that ran the fewest devices at the last round (it is the one
// the device would be handed to), among those the hash picks first, or ""
// when there is none.
func (c *Coordinator) other(id string) string {
	c.mu.Lock()
	reps := slices.DeleteFunc(slices.Clone(c.replicas), func(r ports.Replica) bool {
		return r.ID == c.self || r.Addr == "" || time.Until(r.Expires) < 0
	})
	counts := c.counts
	c.mu.Unlock()
	if len(reps) == 0 {
		return ""
	}
	first := bucket(id, len(reps))
	best := reps[first]
	for i := range reps {
		r := reps[(first+i)%len(reps)]
		if counts[r.ID] < counts[best.ID] {
			best = r
		}
	}
	return best.Addr
}

// storeError is the error of a call to the database that failed.
func (c *Coordinator) storeError(err error) error {
	if isUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return domain.Wrap(domain.EUNAVAILABLE, err, "the shared database cannot be reached; try again")
	}
	return err
}

// errMoving is Route's answer for a device between two replicas.
var errMoving = domain.Errorf(domain.EUNAVAILABLE, "the device is moving between replicas; try again")

// Drain hands every device over before the process exits: it stops
// acquiring and delivering webhooks, then stops (Drop) and releases the
// devices a batch at a time, waking the other replicas after each batch
// so that they take them at once, waits for the webhook deliveries in
// flight (Config.WaitDeliveries, at most DeliveryWait from the start),
// gives up the webhooks lease, and leaves the live replicas. Calls for
// devices nobody holds go to other replicas meanwhile (Route). Devices
// are stopped even when the database cannot be reached; their leases
// then lapse at expiry.
func (c *Coordinator) Drain(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.tellDelivery()
	quiet := c.waitDeliveries(ctx)
	c.opMu.Lock()
	ids := c.Held()
	slices.Sort(ids)
	var unreleased []string
	const batch = 16
	for len(ids) > 0 {
		n := min(batch, len(ids))
		part := ids[:n]
		ids = ids[n:]
		c.mu.Lock()
		for _, id := range part {
			delete(c.held, id)
		}
		c.mu.Unlock()
		c.dropAll(ctx, part)
		sctx, cancel := c.storeCtx(ctx)
		if err := c.cfg.Leases.Release(sctx, part...); err != nil {
			unreleased = append(unreleased, part...)
		}
		cancel()
		c.notify(ctx)
	}
	var errs []error
	if len(unreleased) > 0 {
		// Once more (a database slow under load): otherwise the others
		// wait for these leases to lapse.
		sctx, cancel := c.storeCtx(ctx)
		err := c.cfg.Leases.Release(sctx, unreleased...)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	// Rounds renew the webhooks lease meanwhile.
	c.opMu.Unlock()
	if err := <-quiet; err != nil {
		c.log.Warn("webhook deliveries still in flight: handing them over anyway (they may be made twice)", "err", err)
	}
	c.opMu.Lock()
	defer c.opMu.Unlock()
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	c.mu.Lock()
	delete(c.held, ports.WebhooksLease)
	c.left = true
	c.mu.Unlock()
	if err := c.cfg.Leases.Release(sctx, ports.WebhooksLease); err != nil {
		errs = append(errs, err)
	}
	if err := c.cfg.Leases.Leave(sctx); err != nil {
		errs = append(errs, err)
	}
	c.notify(ctx)
	c.log.Info("drained: every device handed over")
	return errors.Join(errs...)
}

// Claim takes the lease of device id for this replica before the device
// service creates the device here (device.Config.Claim): a device created
// without a call routed first (a generated id) is then never placed on
// another replica meanwhile. It fails with EUNAVAILABLE when another
// replica holds the device, or this one cannot take leases now.
func (c *Coordinator) Claim(ctx context.Context, id string) error {
	local, _, _, err := c.route(ctx, id, true, false)
	switch {
	case err != nil:
		return err
	case !local:
		return domain.Errorf(domain.EUNAVAILABLE, "device %s is run by another replica; try again", id)
	}
	return nil
}
