package cluster

import (
	"cmp"
	"context"
	"hash/fnv"
	"slices"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Placement spreads the devices over the live replicas: each takes its
// share, ceil(devices/replicas), of the free ones, preferring those whose
// hash picks it (so that replicas placing at once seldom want the same
// device), and one holding more than its share while another holds less
// hands the excess over a few devices per round: stop, release, and wake
// the others, who take them as free devices.

// place is one placement pass: the webhooks lease if free, free devices
// up to this replica's share, or a handoff of its excess.
func (c *Coordinator) place(ctx context.Context) error {
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	reps, err := c.cfg.Leases.Replicas(sctx)
	if err != nil {
		return err
	}
	me := slices.IndexFunc(reps, func(r ports.Replica) bool { return r.ID == c.self })
	if me < 0 {
		return nil // the heartbeat has not landed: nothing is decided without it
	}
	leases, err := c.cfg.Leases.Leases(sctx)
	if err != nil {
		return err
	}
	c.scheduleLapses(reps, me, leases)
	unowned, err := c.cfg.Leases.Unowned(sctx)
	if err != nil {
		return err
	}
	// Only the devices of live replicas count: a replica whose heartbeat
	// lapsed loses its leases soon, and they come back as free devices.
	counts := map[string]int{}
	live := map[string]bool{}
	for _, r := range reps {
		live[r.ID] = true
	}
	total := 0
	for _, l := range leases {
		if l.DeviceID != ports.WebhooksLease && live[l.Holder] {
			counts[l.Holder]++
			total++
		}
	}
	var free []string
	webhooksFree := false
	for _, id := range unowned {
		if id == ports.WebhooksLease {
			webhooksFree = true
			continue
		}
		free = append(free, id)
		total++
	}
	share := (total + len(reps) - 1) / len(reps)
	c.mu.Lock()
	c.replicas, c.counts = reps, counts
	c.mu.Unlock()
	mine := len(c.Held())

	if webhooksFree {
		if _, ok, err := c.cfg.Leases.Acquire(sctx, ports.WebhooksLease, c.cfg.TTL); err != nil {
			return err
		} else if ok {
			c.mu.Lock()
			c.held[ports.WebhooksLease] = &entry{since: time.Now()}
			c.mu.Unlock()
			c.log.Info("this replica delivers the webhooks now")
		}
	}

	switch {
	case mine < share && len(free) > 0:
		c.acquireFree(ctx, preferred(free, me, len(reps)), share-mine)
	case mine > share:
		below := false
		for _, r := range reps {
			if r.ID != c.self && counts[r.ID] < share {
				below = true
			}
		}
		if below {
			batch := max(c.cfg.HandoffBatch, (share+3)/4)
			if c.handOff(ctx, min(mine-share, batch), me, len(reps)) < mine-share {
				c.roundBy(time.Now().Add(c.cfg.TTL / 10))
			}
		}
	}
	return nil
}

// acquireFree acquires up to want of the free devices, in order, and
// starts each it gets.
func (c *Coordinator) acquireFree(ctx context.Context, free []string, want int) {
	var got []string
	for _, id := range free {
		if len(got) == want || ctx.Err() != nil || c.Fenced() {
			break
		}
		c.renewIfDue(ctx)
		sctx, cancel := c.storeCtx(ctx)
		_, ok, err := c.cfg.Leases.Acquire(sctx, id, c.cfg.TTL)
		cancel()
		if err != nil {
			c.log.Warn("acquiring a free device", "device_id", id, "err", err)
			break
		}
		if !ok {
			continue // another replica was quicker
		}
		got = append(got, id)
		c.mu.Lock()
		c.held[id] = &entry{since: time.Now()}
		c.mu.Unlock()
		_ = c.adopt(ctx, id)
	}
	if len(got) > 0 {
		c.log.Info("acquired free devices", "devices", len(got), "device_ids", got)
	}
}

// handOff stops and releases up to n devices, those another replica's
// hash prefers first, never one pairing or unlinking (the user in the
// middle of it would lose it), and wakes the other replicas. It returns
// how many it handed off.
func (c *Coordinator) handOff(ctx context.Context, n, me, replicas int) int {
	held := c.Held()
	slices.SortFunc(held, func(a, b string) int {
		// Devices preferring another replica first, then by id.
		pa, pb := bucket(a, replicas) == me, bucket(b, replicas) == me
		if pa != pb {
			if pa {
				return 1
			}
			return -1
		}
		return cmp.Compare(a, b)
	})
	var gone []string
	for _, id := range held {
		if len(gone) == n {
			break
		}
		c.renewIfDue(ctx)
		st, err := c.cfg.Devices.Get(ctx, id)
		if err == nil && (st.State == domain.StatePairing || st.State == domain.StateUnlinking) {
			continue
		}
		// Out of held first: Route stops answering "here" for it, and
		// sends its calls to another replica once the lease is free.
		c.mu.Lock()
		delete(c.held, id)
		c.handedOff[id] = time.Now()
		c.mu.Unlock()
		if err := c.cfg.Devices.Drop(ctx, id); err != nil {
			c.log.Error("stopping a device to hand it off", "device_id", id, "err", err)
		}
		gone = append(gone, id)
	}
	if len(gone) == 0 {
		return 0
	}
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	if err := c.cfg.Leases.Release(sctx, gone...); err != nil {
		// They lapse at their expiry instead.
		c.log.Warn("releasing handed-off devices", "err", err)
	}
	c.log.Info("handed devices off to a replica below its share", "devices", len(gone), "device_ids", gone)
	c.notify(ctx)
	return len(gone)
}

// gaveUp tells whether this replica handed device id off lately: less than
// a lease time ago, or (forwarded: another replica chose this one for it)
// less than takeBackAfter ago. It is another replica's to take, and this
// one does not take it back (a device bouncing between two replicas is
// dropped and connected again each time, and its calls are refused
// meanwhile).
func (c *Coordinator) gaveUp(id string, forwarded bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	at, ok := c.handedOff[id]
	if !ok {
		return false
	}
	if forwarded {
		return time.Since(at) <= c.takeBackAfter()
	}
	return time.Since(at) <= c.cfg.TTL
}

func (c *Coordinator) gaveUpLocked(id string) bool {
	at, ok := c.handedOff[id]
	return ok && time.Since(at) <= c.cfg.TTL
}

// takeBackAfter is how long after handing a device off this replica takes
// it for a call another replica forwarded here: long enough for the calls
// routed here as its holder just before the handoff to have come in.
func (c *Coordinator) takeBackAfter() time.Duration { return c.cfg.TTL / 10 }

// lapseMargin is how long after another replica's lease or heartbeat
// should lapse the extra round comes: clocks and the order of its last
// heartbeat and renewal (a few milliseconds apart) are not exact.
const lapseMargin = 250 * time.Millisecond

// scheduleLapses asks for a round just after the next lapse expected
// before the regular round: another replica's heartbeat (a replica that
// died), or a live lease held by no live replica. The database's clock is
// read off this replica's own heartbeat: it expires TTL after it was sent.
func (c *Coordinator) scheduleLapses(reps []ports.Replica, me int, leases []ports.Lease) {
	c.mu.Lock()
	defer c.mu.Unlock()
	skew := reps[me].Expires.Add(-c.cfg.TTL).Sub(c.beat) // database minus local
	c.skew = skew
	for id, at := range c.handedOff {
		if time.Since(at) > c.cfg.TTL {
			delete(c.handedOff, id)
		}
	}
	var next time.Time
	consider := func(dbTime time.Time) {
		at := dbTime.Add(-skew).Add(lapseMargin)
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	live := map[string]bool{}
	for i, r := range reps {
		live[r.ID] = true
		if i != me {
			consider(r.Expires)
		}
	}
	for _, l := range leases {
		if !live[l.Holder] && l.Holder != "" {
			consider(l.Expires)
		}
	}
	if !next.IsZero() && time.Until(next) < c.cfg.TTL/3 {
		c.roundByLocked(next)
	}
}

// roundBy asks for the next round to come by at.
func (c *Coordinator) roundBy(at time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.roundByLocked(at)
}

func (c *Coordinator) roundByLocked(at time.Time) {
	if c.roundAt.IsZero() || at.Before(c.roundAt) {
		c.roundAt = at
	}
}

// notify wakes the other replicas' placement, when the wiring can.
func (c *Coordinator) notify(ctx context.Context) {
	if c.cfg.Notify == nil {
		return
	}
	sctx, cancel := c.storeCtx(ctx)
	defer cancel()
	if err := c.cfg.Notify(sctx); err != nil {
		c.log.Warn("waking the other replicas", "err", err)
	}
}

// preferred orders free devices: those whose hash picks replica me first,
// then the rest, each part starting at an offset that differs between
// replicas, so that replicas taking the rest do not all start at the same
// device.
func preferred(free []string, me, replicas int) []string {
	var mine, rest []string
	for _, id := range free {
		if bucket(id, replicas) == me {
			mine = append(mine, id)
		} else {
			rest = append(rest, id)
		}
	}
	if len(rest) > 0 {
		off := me * len(rest) / replicas
		rest = slices.Concat(rest[off:], rest[:off])
	}
	return append(mine, rest...)
}

// bucket is the replica index id's hash picks among n.
func bucket(id string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(id))
	return int(h.Sum32() % uint32(n))
}
