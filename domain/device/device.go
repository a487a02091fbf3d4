package device

import (
	"context"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// device is one slot and its WhatsApp client.
//
// Two locks, always taken in this order: op serialises lifecycle work
// (login, logout, reconnect, delete, and the events that open or close
// clients), so that concurrent calls never open two connections; mu guards
// the fields below and is only held for short, non-blocking updates, so
// that status reads and event bookkeeping never wait on the network.
type device struct {
	svc *Service
	id  string

	ctx    context.Context // the device's lifetime; clients run on it
	cancel context.CancelFunc
	queue  eventQueue

	op sync.Mutex

	mu        sync.Mutex
	createdAt time.Time
	state     domain.State
	since     time.Time
	lastError string
	jid       string // linked session, "" if none
	identity  domain.Identity
	pairing   *pairing
	client    ports.Client
	gen       uint64        // bumped whenever client changes; events of older clients are ignored
	changed   chan struct{} // closed and replaced on every state change
}

// pairing is a login in progress.
type pairing struct {
	domain.Pairing
	path    string // the temporary session database
	phone   string // digits, for pairing codes
	started time.Time
	ready   chan struct{} // closed when the first QR code arrives
}

// view is a consistent copy of the fields a decision needs.
type view struct {
	state    domain.State
	jid      string
	loggedIn bool
	pairing  *pairing
	client   ports.Client
	gen      uint64
}

func newDevice(s *Service, slot domain.Slot) *device {
	ctx, cancel := context.WithCancel(s.ctx)
	d := &device{
		svc:       s,
		id:        slot.ID,
		ctx:       ctx,
		cancel:    cancel,
		createdAt: slot.CreatedAt,
		state:     domain.StateDisconnected,
		since:     s.cfg.Clock.Now(),
		jid:       slot.JID,
		changed:   make(chan struct{}),
	}
	d.queue.init()
	if slot.JID != "" {
		d.identity = domain.Identity{JID: slot.JID, Phone: domain.PhoneOfJID(slot.JID)}
	}
	return d
}

func (d *device) snapshot() view {
	d.mu.Lock()
	defer d.mu.Unlock()
	return view{state: d.state, jid: d.jid, loggedIn: d.jid != "", pairing: d.pairing, client: d.client, gen: d.gen}
}

func (d *device) status() domain.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := domain.Status{
		DeviceID:  d.id,
		State:     d.state,
		Identity:  d.identity,
		LoggedIn:  d.jid != "",
		Connected: d.state == domain.StateConnected,
		Since:     d.since,
		LastError: d.lastError,
		CreatedAt: d.createdAt,
	}
	if d.pairing != nil {
		p := d.pairing.Pairing
		st.Pairing = &p
	}
	return st
}

// setStateLocked moves to state, recording why when reason is not empty,
// and wakes everyone waiting for a change. d.mu must be held.
func (d *device) setStateLocked(state domain.State, reason string) {
	if state != d.state {
		d.state = state
		d.since = d.svc.cfg.Clock.Now()
	}
	if reason != "" {
		d.lastError = reason
	}
	close(d.changed)
	d.changed = make(chan struct{})
}

func (d *device) setState(state domain.State, reason string) {
	d.mu.Lock()
	d.setStateLocked(state, reason)
	d.mu.Unlock()
}

// waitFor waits until ok holds for the device's state, ctx ends or the
// device stops.
func (d *device) waitFor(ctx context.Context, ok func(view) bool) (view, error) {
	for {
		d.mu.Lock()
		v := view{state: d.state, jid: d.jid, loggedIn: d.jid != "", pairing: d.pairing, client: d.client, gen: d.gen}
		changed := d.changed
		d.mu.Unlock()
		if ok(v) {
			return v, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return v, ctx.Err()
		case <-d.ctx.Done():
			return v, errShutdown
		}
	}
}

// open opens a client on the session database at path, closing the
// current one first, so that a device never has two. Its events are queued
// for the device's event loop, tagged with the client's generation. A
// device that was deleted or shut down opens nothing: no one would close
// the client. d.op must be held.
func (d *device) open(path string) (ports.Client, uint64, error) {
	if err := d.goneErr(); err != nil {
		return nil, 0, err
	}
	d.closeClientLocked()
	d.mu.Lock()
	d.gen++
	gen := d.gen
	d.mu.Unlock()
	c, err := d.svc.cfg.WhatsApp.Open(d.ctx, path, func(ev domain.Event) { d.queue.push(gen, ev) })
	if err != nil {
		return nil, 0, domain.Wrap(domain.EINTERNAL, err, "open session")
	}
	d.mu.Lock()
	d.client = c
	d.mu.Unlock()
	return c, gen, nil
}

// closeClientLocked closes the current client, if any, without logging
// out. d.op must be held.
func (d *device) closeClientLocked() {
	d.mu.Lock()
	c := d.client
	d.client = nil
	d.gen++
	d.mu.Unlock()
	if c != nil {
		if err := c.Close(); err != nil {
			d.svc.log.Warn("closing WhatsApp client", "device_id", d.id, "err", err)
		}
	}
}

// goneErr returns an error once the device has stopped, because it was
// deleted or the service is closing, and nil while it lives. Callers that
// won d.op after a Delete or Close must not touch WhatsApp any more.
func (d *device) goneErr() error {
	switch {
	case d.ctx.Err() == nil:
		return nil
	case d.svc.ctx.Err() != nil:
		return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	default:
		return domain.Errorf(domain.ENOTFOUND, "device %s not found", d.id)
	}
}

// shutdown closes the client at service shutdown; the session stays.
func (d *device) shutdown() {
	d.op.Lock()
	d.closeClientLocked()
	d.mu.Lock()
	if d.pairing != nil {
		p := d.pairing
		d.pairing = nil
		d.mu.Unlock()
		_ = d.svc.cfg.Sessions.Discard(p.path)
	} else {
		d.mu.Unlock()
	}
	d.op.Unlock()
	d.stop()
}

// stop ends the device's lifetime context and its event loop.
func (d *device) stop() {
	d.cancel()
	d.queue.close()
}

// eventQueue is an unbounded FIFO of client events. Clients call push from
// their own goroutines and must never block, so it never does.
type eventQueue struct {
	mu     sync.Mutex
	items  []queued
	signal chan struct{}
	done   bool
}

type queued struct {
	gen uint64
	ev  domain.Event
}

func (q *eventQueue) init() { q.signal = make(chan struct{}, 1) }

func (q *eventQueue) push(gen uint64, ev domain.Event) {
	q.mu.Lock()
	if !q.done {
		q.items = append(q.items, queued{gen, ev})
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop returns the next event, waiting for one; false once closed.
func (q *eventQueue) pop() (queued, bool) {
	for {
		q.mu.Lock()
		if q.done {
			q.mu.Unlock()
			return queued{}, false
		}
		if len(q.items) > 0 {
			it := q.items[0]
			q.items[0] = queued{}
			q.items = q.items[1:]
			q.mu.Unlock()
			return it, true
		}
		q.mu.Unlock()
		<-q.signal
	}
}

func (q *eventQueue) close() {
	q.mu.Lock()
	q.done = true
	q.items = nil
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}
