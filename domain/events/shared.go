package events

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// This file is the part of the hub that only runs when the log is shared
// with other replicas (Config.Shared).

// follower tells the streams what the log holds beyond the last event they
// were told, whoever appended it, and keeps the webhooks in step with the
// store. It reads after each of this hub's writes and each wake-up from
// another replica; a failed read is tried again after a second, then
// less often (up to every 10 s) while the database stays out of reach.
func (h *Hub) follower() {
	appended, hooks := h.cfg.Shared.Appended, h.cfg.Shared.Webhooks
	var (
		read, reload = true, true // what happened before Start was read too
		retry        *time.Timer
		retryC       <-chan time.Time
		backoff      = time.Second
	)
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		if reload {
			if err := h.reloadWebhooks(h.ctx); err != nil {
				if h.ctx.Err() != nil {
					return
				}
				h.log.Error("reading the webhooks other replicas changed; retrying", "err", err)
			} else {
				reload = false
			}
		}
		if read {
			if err := h.catchUp(h.ctx); err != nil {
				if h.ctx.Err() != nil {
					return
				}
				h.log.Error("reading the shared event log; retrying", "err", err)
			} else {
				read = false
			}
		}
		switch {
		case !read && !reload:
			backoff = time.Second
		case retryC == nil:
			retry = time.NewTimer(backoff)
			retryC = retry.C
			backoff = min(2*backoff, 10*time.Second)
		}
		select {
		case <-h.ctx.Done():
			return
		case <-h.follow:
			read = true
		case _, ok := <-appended:
			if !ok {
				appended = nil
			}
			read = true
		case _, ok := <-hooks:
			if !ok {
				hooks = nil
			}
			reload = true
		case <-retryC:
			retryC = nil
		}
	}
}

// catchUp reads the log after the last event told and tells it.
func (h *Hub) catchUp(ctx context.Context) error {
	for {
		h.mu.Lock()
		after := h.lastID
		h.mu.Unlock()
		evs, err := h.cfg.Store.Read(ctx, after, readPage)
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		h.publish(evs, false)
		h.wakeFor(evs)
		for _, ev := range evs {
			if ev.Type == domain.EventDeviceDeleted {
				h.retire(ev)
			}
		}
		if len(evs) < readPage {
			return nil
		}
	}
}

// wakeFor wakes the dispatchers of the endpoints evs were routed to (by
// whichever replica appended them), when this hub delivers.
func (h *Hub) wakeFor(evs []domain.LiveEvent) {
	if h.cfg.Sender == nil || !h.delivering() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.hooks {
		for _, ev := range evs {
			if (e.hook.DeviceID == "" || e.hook.DeviceID == ev.DeviceID) && e.hook.Events.Match(ev.Type) {
				e.wake()
				break
			}
		}
	}
}

// retire starts retiring the webhook of a device deleted by any replica,
// unless the webhook is newer than the deletion: the device's own webhook
// gets device.deleted and nothing later. (The replica that appended the
// event retired it already, in route.)
func (h *Hub) retire(ev domain.LiveEvent) {
	key := deviceKey(ev.DeviceID)
	h.mu.Lock()
	e := h.hooks[key]
	if e == nil || e.since >= ev.ID {
		h.mu.Unlock()
		return
	}
	delete(h.hooks, key)
	h.retiring[key] = e
	e.retiring.Store(true)
	h.mu.Unlock()
	e.wake()
}

// reloadWebhooks makes the device webhooks the store holds this hub's:
// new and changed ones start, removed ones stop (another replica deleted
// them, or delivered a deleted device's last events and removed it).
func (h *Hub) reloadWebhooks(ctx context.Context) error {
	h.hookOps.Lock()
	defer h.hookOps.Unlock()
	stored, err := h.cfg.Store.ListWebhooks(ctx)
	if err != nil {
		return err
	}
	_, since, err := h.cfg.Store.Bounds(ctx)
	if err != nil {
		return err
	}
	want := make(map[string]domain.Webhook, len(stored))
	for _, w := range stored {
		want[deviceKey(w.DeviceID)] = w
	}
	var install []domain.Webhook
	var stop []*endpoint
	h.mu.Lock()
	for key, w := range want {
		if cur := h.hooks[key]; cur != nil && sameHook(cur.hook, w) {
			continue
		}
		if r := h.retiring[key]; r != nil && h.hooks[key] == nil && sameHook(r.hook, w) {
			continue // still delivering the deleted device's last events
		}
		install = append(install, w)
	}
	for key, e := range h.hooks {
		if _, ok := want[key]; !ok && strings.HasPrefix(key, "device:") {
			delete(h.hooks, key)
			stop = append(stop, e)
		}
	}
	for key, e := range h.retiring {
		if _, ok := want[key]; !ok {
			delete(h.retiring, key)
			stop = append(stop, e)
		}
	}
	h.mu.Unlock()
	for _, e := range stop {
		e.stop()
	}
	for _, w := range install {
		if err := h.install(w, since); err != nil {
			return nil // shutting down
		}
	}
	return nil
}

func sameHook(a, b domain.Webhook) bool {
	if a.DeviceID != b.DeviceID || a.URL != b.URL || a.Secret != b.Secret || len(a.Events) != len(b.Events) {
		return false
	}
	for i := range a.Events {
		if a.Events[i] != b.Events[i] {
			return false
		}
	}
	return true
}

// storeError wraps a failure of the store: EUNAVAILABLE when the shared
// database could not be reached (the caller may try again; an HTTP client
// gets 503), EINTERNAL otherwise.
func storeError(err error, what string) *domain.Error {
	if errors.Is(err, ports.ErrStoreUnavailable) {
		return domain.Wrap(domain.EUNAVAILABLE, err, what+": the shared database is unreachable; try again")
	}
	return domain.Wrap(domain.EINTERNAL, err, what)
}

// delivering reports whether the dispatchers may send now (Config.Deliver).
func (h *Hub) delivering() bool {
	return h.cfg.Deliver == nil || h.cfg.Deliver()
}

// sending counts delivery workers starting (+1) and ending (-1).
func (h *Hub) sending(d int) {
	h.smu.Lock()
	defer h.smu.Unlock()
	h.busy += d
	switch {
	case d > 0 && h.busy == 1:
		h.quiet = make(chan struct{})
	case d < 0 && h.busy == 0:
		close(h.quiet)
	}
}

// WaitDeliveries returns once no webhook delivery is in flight. Called
// after Config.Deliver turned false, it means that this hub sends nothing
// more and has recorded (done or retry) everything it sent, so that
// another replica can take over delivering without sending any of it
// again: call it between losing the gate and handing it over. A send in
// flight finishes first (within the sender's timeout), unless ctx ends.
func (h *Hub) WaitDeliveries(ctx context.Context) error {
	h.smu.Lock()
	if h.busy == 0 {
		h.smu.Unlock()
		return nil
	}
	quiet := h.quiet
	h.smu.Unlock()
	select {
	case <-quiet:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// WakeDispatchers makes every webhook dispatcher look at the outbox now:
// call it when Config.Deliver turns true, so that deliveries resume at
// once rather than at the next RetryPoll.
func (h *Hub) WakeDispatchers() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range h.hooks {
		e.wake()
	}
	for _, e := range h.retiring {
		e.wake()
	}
}
