package cluster

import (
	"context"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// A round: heartbeat and renewal, then the devices held but not running,
// then placement (placement.go).

// storeCtx bounds one call to the database: a stalled connection must
// not hold a round for long, so that a renewal is tried again well before
// the devices have to stop.
func (c *Coordinator) storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.cfg.TTL/6)
}

// round is one placement round: heartbeat, renewal, then (place)
// placement. It tells whether the renewal succeeded.
//
// When a call or Drain holds the placement lock (starting or stopping a
// device, which takes long when the database is slow under load), the
// round only renews, at once, and asks for the next round soon: waiting
// for the lock would leave every lease unrenewed until the watchdog stops
// all the devices.
func (c *Coordinator) round(ctx context.Context, place bool) bool {
	defer c.tellDelivery() // the webhooks lease taken, lost or renewed again
	c.mu.Lock()
	left := c.left
	c.mu.Unlock()
	if left || ctx.Err() != nil {
		return true
	}
	if !c.opMu.TryLock() {
		if err := c.renew(ctx, false); err != nil {
			c.log.Warn("lease renewal failed", "err", err)
			return false
		}
		c.roundBy(time.Now().Add(c.cfg.TTL / 10))
		return true
	}
	defer c.opMu.Unlock()
	c.mu.Lock()
	left = c.left
	c.mu.Unlock()
	if left || ctx.Err() != nil {
		return true
	}
	if err := c.renew(ctx, true); err != nil {
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
// reconcile, which needs the placement lock, also takes up the leases this
// replica holds without knowing it and releases again those of devices it
// handed off; without it, the renewal only renews and drops.
func (c *Coordinator) renew(ctx context.Context, reconcile bool) error {
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
		// One acquired since the renewal began (by a call, while this
		// renewal ran without the placement lock) is not in still.
		if !still[id] && e.since.Before(start) {
			delete(c.held, id)
			if e.adopted {
				lost = append(lost, id)
			}
		}
	}
	var unknown, givenUp []string
	for id := range still {
		if _, ok := c.held[id]; ok || !reconcile {
			continue
		}
		if c.gaveUpLocked(id) {
			// Handed off, and its release failed: released again below,
			// never started here again.
			givenUp = append(givenUp, id)
			continue
		}
		// Acquired by a call whose answer did not arrive.
		c.held[id] = &entry{since: start}
		unknown = append(unknown, id)
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
	if len(unknown) > 0 {
		c.log.Warn("renewed leases this replica did not know it held: starting their devices", "device_ids", unknown)
	}
	if len(givenUp) > 0 {
		rctx, cancel := c.storeCtx(ctx)
		defer cancel()
		if err := c.cfg.Leases.Release(rctx, givenUp...); err != nil {
			c.log.Warn("releasing the leases of devices handed off", "device_ids", givenUp, "err", err)
		} else {
			c.log.Info("released the leases of devices handed off whose release had failed", "device_ids", givenUp)
		}
	}
	if len(lost) > 0 {
		c.log.Warn("leases lost (they lapsed): stopping their devices", "devices", len(lost))
		c.dropAll(ctx, lost)
	}
	return nil
}

// renewIfDue renews the leases when a round's work has taken a third of
// the lease time since the last renewal began: a round that starts or
// stops many devices (each slow when the database is under load) must not
// leave the leases unrenewed until the watchdog stops every device. Only
// the Run goroutine renews, so renewals never overlap.
func (c *Coordinator) renewIfDue(ctx context.Context) {
	c.mu.Lock()
	due := time.Since(c.lastOK) >= c.cfg.TTL/3 && !c.left
	c.mu.Unlock()
	if !due || ctx.Err() != nil {
		return
	}
	if err := c.renew(ctx, false); err != nil {
		c.log.Warn("lease renewal failed", "err", err)
	}
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
		c.renewIfDue(ctx)
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
