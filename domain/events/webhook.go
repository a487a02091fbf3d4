package events

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

func jsonMarshal(v any) (json.RawMessage, error) { return json.Marshal(v) }

func globalKey(url string) string { return "global:" + url }

// label is an endpoint key fit for logs and metrics: a global webhook's URL
// loses its user info and query, where tokens tend to live.
func label(key string) string {
	rest, ok := strings.CutPrefix(key, "global:")
	if !ok {
		return key
	}
	u, err := url.Parse(rest)
	if err != nil {
		return "global:?"
	}
	return "global:" + u.Scheme + "://" + u.Host + u.Path
}
func deviceKey(id string) string { return "device:" + id }

// endpoint is one webhook and its dispatcher, the only reader of its part
// of the outbox.
type endpoint struct {
	hub    *Hub
	key    string
	label  string // key without the URL's credentials or query, for logs and metrics
	hook   domain.Webhook
	wakeCh chan struct{}
	// retiring: its device was deleted; it stops once its outbox is empty.
	retiring atomic.Bool
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{}
	// since (shared log only) is the last event id committed when the
	// webhook was read from the store: a device.deleted up to it is older
	// than the webhook and does not retire it.
	since int64
}

func (h *Hub) newEndpoint(key string, w domain.Webhook) *endpoint {
	ctx, cancel := context.WithCancel(h.ctx)
	return &endpoint{hub: h, key: key, label: label(key), hook: w, wakeCh: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{})}
}

func (h *Hub) startEndpoint(e *endpoint) {
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		defer close(e.done)
		e.run()
	}()
}

func (e *endpoint) wake() {
	select {
	case e.wakeCh <- struct{}{}:
	default:
	}
}

// stop ends the dispatcher and waits for it.
func (e *endpoint) stop() {
	e.cancel()
	<-e.done
}

// window is how many pending deliveries a dispatcher looks at a time.
const window = 256

// run delivers the endpoint's outbox until the endpoint is stopped: oldest
// first, each device's events one at a time and in order, devices in
// parallel. A device whose earliest delivery is waiting for a retry is left
// out until it is due, so that it holds up neither other devices nor other
// endpoints.
func (e *endpoint) run() {
	h := e.hub
	type result struct {
		dev     string
		at      time.Time
		blocked bool
	}
	blocked := map[string]time.Time{} // device → when its head is due again
	inflight := map[string]bool{}     // devices a worker is delivering
	var (
		queued []string                     // devices read from the outbox, waiting for a worker
		groups map[string][]domain.Delivery // their deliveries, in order
	)
	results := make(chan result, h.cfg.DeliveryParallelism)
	defer func() {
		for len(inflight) > 0 {
			delete(inflight, (<-results).dev)
		}
	}()
	for e.ctx.Err() == nil {
		now := h.cfg.Clock.Now()
		var skip []string
		for dev, at := range blocked {
			if at.After(now) {
				skip = append(skip, dev)
			} else {
				delete(blocked, dev)
			}
		}
		for dev := range inflight {
			skip = append(skip, dev)
		}
		slices.Sort(skip)
		idle := len(inflight) == 0
		// Look at the outbox only when the groups read last time are all
		// handed out: one read feeds many workers.
		if h.cfg.Sender != nil && h.delivering() && len(queued) == 0 && len(inflight) < h.cfg.DeliveryParallelism {
			pend, err := h.cfg.Store.Pending(e.ctx, e.key, skip, window)
			if err != nil {
				if e.ctx.Err() == nil {
					h.log.Error("reading the webhook outbox", "endpoint", e.label, "err", err)
					e.sleep(time.Second)
				}
				continue
			}
			if len(pend) == 0 && idle && len(blocked) == 0 && e.retiring.Load() {
				if e.finishRetiring() {
					return
				}
				continue
			}
			groups = map[string][]domain.Delivery{}
			for _, d := range pend {
				if _, ok := groups[d.DeviceID]; !ok {
					queued = append(queued, d.DeviceID)
				}
				groups[d.DeviceID] = append(groups[d.DeviceID], d)
			}
		}
		// Each device's deliveries go one at a time, in order, on a worker
		// of their own; a slow or failing device holds up neither the
		// others nor this loop.
		for len(queued) > 0 && len(inflight) < h.cfg.DeliveryParallelism {
			dev := queued[0]
			queued = queued[1:]
			inflight[dev] = true
			idle = false
			go func(group []domain.Delivery) {
				at, ok := e.deliverInOrder(group)
				results <- result{group[0].DeviceID, at, ok}
			}(groups[dev])
			delete(groups, dev)
		}
		if idle {
			e.idle(blocked)
			continue
		}
		var retry <-chan time.Time
		var timer *time.Timer
		if first, ok := earliest(blocked); ok {
			timer = time.NewTimer(min(max(first.Sub(h.cfg.Clock.Now()), 0), h.cfg.RetryPoll))
			retry = timer.C
		}
		select {
		case r := <-results:
			delete(inflight, r.dev)
			if r.blocked {
				blocked[r.dev] = r.at
			}
		case <-e.wakeCh:
		case <-retry:
		case <-e.ctx.Done():
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// earliest returns the earliest time in m.
func earliest(m map[string]time.Time) (time.Time, bool) {
	var first time.Time
	for _, at := range m {
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// deliverInOrder sends a device's deliveries one by one until one fails,
// returning when that one is due again (and true) if so. Finished
// deliveries leave the outbox in batches (a crash in between only repeats
// them: delivery is at least once), which is most of the throughput.
func (e *endpoint) deliverInOrder(group []domain.Delivery) (time.Time, bool) {
	h := e.hub
	var done []int64
	flush := func() bool {
		if len(done) == 0 {
			return true
		}
		// Even at shutdown: what was delivered must not be sent again.
		err := h.cfg.Store.Done(context.WithoutCancel(e.ctx), done...)
		done = done[:0]
		if err != nil {
			h.log.Error("removing deliveries from the outbox", "endpoint", e.label, "err", err)
			return false
		}
		return true
	}
	defer flush()
	for _, d := range group {
		if e.ctx.Err() != nil || !h.delivering() {
			// Stopping, or another replica delivers now: what is left
			// stays in the outbox for whoever delivers next.
			return time.Time{}, false
		}
		now := h.cfg.Clock.Now()
		if d.NextAt.After(now) {
			return d.NextAt, true
		}
		err := h.cfg.Sender.Send(e.ctx, e.hook, d)
		if e.ctx.Err() != nil {
			return time.Time{}, false // shutting down: tried again at the next start
		}
		now = h.cfg.Clock.Now()
		var outcome string
		switch {
		case err == nil:
			outcome = OutcomeDelivered
		case errors.Is(err, ports.ErrRejected):
			outcome = OutcomeRejected
			h.log.Warn("webhook rejected a delivery; not retrying", "endpoint", e.label, "event_id", d.EventID, "err", err)
		case now.Sub(d.CreatedAt) >= h.cfg.MaxDeliveryAge:
			outcome = OutcomeExpired
			h.log.Error("webhook delivery given up", "endpoint", e.label, "event_id", d.EventID, "attempts", d.Attempts+1, "err", err)
		default:
			e.observe(OutcomeRetry)
			next := now.Add(h.backoff(d.Attempts + 1))
			h.log.Warn("webhook delivery failed; retrying", "endpoint", e.label, "event_id", d.EventID, "attempt", d.Attempts+1, "retry_at", next, "err", err)
			if !flush() {
				return now.Add(time.Second), true
			}
			if err := h.cfg.Store.Retry(e.ctx, d.ID, d.Attempts+1, next); err != nil {
				h.log.Error("recording a webhook retry", "endpoint", e.label, "err", err)
			}
			return next, true
		}
		e.observe(outcome)
		done = append(done, d.ID)
		if len(done) >= 64 && !flush() {
			return now.Add(time.Second), true
		}
	}
	if !flush() {
		return h.cfg.Clock.Now().Add(time.Second), true
	}
	return time.Time{}, false
}

func (e *endpoint) observe(outcome string) {
	if e.hub.cfg.OnDelivery != nil {
		e.hub.cfg.OnDelivery(e.label, outcome)
	}
}

// backoff is the wait before attempt n+1: RetryBase·2^(n-1), capped at
// RetryMax, between half and all of it at random (jitter spreads the
// retries of many devices after a receiver outage).
func (h *Hub) backoff(n int) time.Duration {
	d := float64(h.cfg.RetryBase) * math.Pow(2, float64(n-1))
	d = min(d, float64(h.cfg.RetryMax))
	return time.Duration(d/2 + d/2*h.cfg.Rand())
}

// idle waits for new deliveries, the earliest retry in blocked, or stop.
func (e *endpoint) idle(blocked map[string]time.Time) {
	var wait <-chan time.Time
	if first, ok := earliest(blocked); ok {
		// Checked at least every RetryPoll, so that a clock that jumps (a
		// suspended machine, a test's clock) is noticed.
		t := time.NewTimer(min(max(first.Sub(e.hub.cfg.Clock.Now()), 0), e.hub.cfg.RetryPoll))
		defer t.Stop()
		wait = t.C
	} else if !e.hub.delivering() {
		// A closed gate is looked at every RetryPoll, in case nobody calls
		// WakeDispatchers when it opens. (An open one needs no poll: this
		// replica's writes and the other replicas' wake-ups wake it.)
		t := time.NewTimer(e.hub.cfg.RetryPoll)
		defer t.Stop()
		wait = t.C
	}
	select {
	case <-e.wakeCh:
	case <-wait:
	case <-e.ctx.Done():
	}
}

func (e *endpoint) sleep(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-e.ctx.Done():
	}
}

// finishRetiring removes a retiring webhook whose outbox is empty, and
// reports whether it did. The stored webhook goes only now, so that a
// restart before the outbox drained still delivers it.
func (e *endpoint) finishRetiring() bool {
	h := e.hub
	// TryLock: a SetDeviceWebhook holding hookOps may be waiting for this
	// very dispatcher to stop.
	if !h.hookOps.TryLock() {
		e.sleep(50 * time.Millisecond)
		return false
	}
	defer h.hookOps.Unlock()
	h.mu.Lock()
	current := h.retiring[e.key] == e
	h.mu.Unlock()
	if !current {
		return true // a new webhook of the same id took over
	}
	if err := h.cfg.Store.DeleteWebhook(e.ctx, e.hook.DeviceID); err != nil {
		h.log.Error("removing a deleted device's webhook", "endpoint", e.label, "err", err)
		return false
	}
	h.mu.Lock()
	if h.retiring[e.key] == e {
		delete(h.retiring, e.key)
	}
	h.mu.Unlock()
	h.log.Info("a deleted device's webhook delivered its last events and was removed", "endpoint", e.label)
	return true
}

// DeviceWebhook returns device id's webhook, without its secret, and
// false when it has none.
func (h *Hub) DeviceWebhook(id string) (domain.Webhook, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.hooks[deviceKey(id)]
	if !ok {
		return domain.Webhook{}, false
	}
	w := e.hook
	w.Secret = ""
	return w, true
}

// SetDeviceWebhook creates or replaces device id's webhook. Events still
// waiting for the old one go to the new one.
func (h *Hub) SetDeviceWebhook(ctx context.Context, w domain.Webhook) error {
	if err := domain.ValidateWebhook(w); err != nil {
		return err
	}
	h.hookOps.Lock()
	defer h.hookOps.Unlock()
	if err := h.cfg.Store.PutWebhook(ctx, w); err != nil {
		return domain.Wrap(domain.EINTERNAL, err, "save the webhook")
	}
	var since int64
	if h.cfg.Shared != nil {
		// A device.deleted committed before the webhook was set is not
		// about it (see endpoint.since).
		_, last, err := h.cfg.Store.Bounds(ctx)
		if err != nil {
			return domain.Wrap(domain.EINTERNAL, err, "read the event log")
		}
		since = last
	}
	return h.install(w, since)
}

// install makes w the device's webhook, in place of any other. Swapped in
// one step, so that no event written meanwhile misses the device's
// webhook; the old dispatcher stops before the new one reads the outbox,
// so that no delivery is sent twice at once. The caller holds hookOps.
func (h *Hub) install(w domain.Webhook, since int64) error {
	key := deviceKey(w.DeviceID)
	e := h.newEndpoint(key, w)
	e.since = since
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	old := h.hooks[key]
	h.hooks[key] = e
	// A webhook still draining for a deleted device of the same id hands
	// what is left to the new one.
	draining := h.retiring[key]
	delete(h.retiring, key)
	h.wg.Add(1) // before Close can wait
	h.mu.Unlock()
	if old != nil {
		old.stop()
	}
	if draining != nil {
		draining.stop()
	}
	go func() {
		defer h.wg.Done()
		defer close(e.done)
		e.run()
	}()
	return nil
}

// DeleteDeviceWebhook removes device id's webhook and drops what was still
// waiting for it. It reports whether there was one.
func (h *Hub) DeleteDeviceWebhook(ctx context.Context, id string) (bool, error) {
	h.hookOps.Lock()
	defer h.hookOps.Unlock()
	key := deviceKey(id)
	h.mu.Lock()
	old := h.hooks[key]
	delete(h.hooks, key)
	h.mu.Unlock()
	if old != nil {
		old.stop()
	}
	if err := h.cfg.Store.DeleteWebhook(ctx, id); err != nil {
		return false, domain.Wrap(domain.EINTERNAL, err, "delete the webhook")
	}
	if err := h.cfg.Store.DropEndpoint(ctx, key); err != nil {
		return false, domain.Wrap(domain.EINTERNAL, err, "drop the webhook's outbox")
	}
	return old != nil, nil
}
