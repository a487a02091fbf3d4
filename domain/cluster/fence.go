package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/ports"
)

// The fence: a replica that cannot renew its leases stops every device
// before they can lapse, whatever the rounds (which may be stuck on the
// database) are doing.

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
		c.tellDelivery()
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
