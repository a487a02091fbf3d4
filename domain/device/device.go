package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// device is one slot. Its owner goroutine (run) is the only one that reads
// or writes its machine: API commands, client events, job results and
// timers all arrive in its inbox, one transition at a time. Blocking work
// runs on the device's job goroutine, in order, and reports back through
// the inbox. Nothing is ever held while waiting for I/O: callers wait for
// a reply or a published state, never for a lock.
type device struct {
	svc *Service
	id  string

	ctx    context.Context // the device's lifetime; clients and jobs run on it
	cancel context.CancelFunc
	inbox  queue[input]
	jobs   queue[func()]
	done   chan struct{} // closed when the owner has stopped and every job ended
	worked chan struct{} // closed when the job goroutine has ended
	// dropped is set when the device stops to move to another replica
	// (Service.Drop), so that the calls it cuts short say so.
	dropped atomic.Bool
	// leaving is closed when Drop begins (leave), so that the sends
	// queued for the client give up at once.
	leaving   chan struct{}
	leaveOnce sync.Once
	// sending admits one send at a time to the client. WhatsApp sends one
	// message at a time per device anyway (whatsmeow holds a lock for the
	// whole send, whatever the caller's context), so a busy device has a
	// queue of sends: waiting here instead, they can be refused at once
	// when the device moves, rather than each failing in its turn.
	sending chan struct{}

	// Owner only.
	m         machine
	createdAt time.Time
	timers    []*time.Timer

	// clients are the open (or opening) clients by generation; jobs fill
	// them in, so it has its own small lock.
	cmu     sync.Mutex
	clients map[uint64]*clientSlot

	// waiters are the callers waiting for a reply, by op.
	wmu     sync.Mutex
	waiters map[uint64]chan reply
	nextOp  uint64

	// mu guards what the owner publishes after every transition.
	mu      sync.Mutex
	pub     domain.Status
	client  ports.Client // the current client while connected
	gen     uint64
	changed chan struct{} // closed and replaced on every change
}

// clientSlot is one client's lifetime: closing it cancels ctx at once, so
// that a call blocked on it returns, and Close runs as a job.
type clientSlot struct {
	ctx    context.Context
	cancel context.CancelFunc
	c      ports.Client
	closed bool
}

func newDevice(s *Service, slot domain.Slot, m machine) *device {
	ctx, cancel := context.WithCancel(s.ctx)
	d := &device{
		svc:       s,
		id:        slot.ID,
		ctx:       ctx,
		cancel:    cancel,
		done:      make(chan struct{}),
		worked:    make(chan struct{}),
		m:         m,
		createdAt: slot.CreatedAt,
		clients:   map[uint64]*clientSlot{},
		waiters:   map[uint64]chan reply{},
		changed:   make(chan struct{}),
		leaving:   make(chan struct{}),
		sending:   make(chan struct{}, 1),
	}
	d.inbox.init()
	d.jobs.init()
	d.pub = d.statusOf(m)
	return d
}

// leave tells the sends waiting for their turn that the device is moving
// to another replica (Drop).
func (d *device) leave() {
	d.dropped.Store(true)
	d.leaveOnce.Do(func() { close(d.leaving) })
}

// admitSend waits for the device's turn to send: the send before it
// ended. A device moving away (or stopped) refuses it with nothing sent,
// so the caller may make it again where the device goes.
func (d *device) admitSend(ctx context.Context) error {
	select {
	case d.sending <- struct{}{}:
	case <-d.leaving:
		return stoppedError(d.id, true)
	case <-d.done:
		return d.goneErr()
	case <-ctx.Done():
		return ctx.Err()
	}
	if d.dropped.Load() {
		<-d.sending
		return stoppedError(d.id, true)
	}
	return nil
}

// endSend lets the next send go.
func (d *device) endSend() { <-d.sending }

// post queues an input for the owner; it never blocks.
func (d *device) post(in input) { d.inbox.push(in) }

// call posts the command made by mk and waits for its reply. A caller who
// hangs up stops waiting; the command goes on.
func (d *device) call(ctx context.Context, mk func(op uint64) input) (reply, error) {
	ch := make(chan reply, 1)
	d.wmu.Lock()
	d.nextOp++
	op := d.nextOp
	d.waiters[op] = ch
	d.wmu.Unlock()
	d.post(mk(op))
	select {
	case r := <-ch:
		return r, r.Err
	case <-ctx.Done():
		d.wmu.Lock()
		delete(d.waiters, op)
		d.wmu.Unlock()
		return reply{}, ctx.Err()
	case <-d.done:
		select {
		case r := <-ch:
			return r, r.Err
		default:
		}
		return reply{}, d.goneErr()
	}
}

// goneErr is the error for a device whose owner has stopped.
func (d *device) goneErr() error {
	if d.svc.ctx.Err() != nil || d.dropped.Load() {
		return stoppedError(d.id, d.dropped.Load())
	}
	return domain.Errorf(domain.ENOTFOUND, "device %s not found", d.id)
}

// stoppedError is the error of a call cut short by the device stopping
// while its session stays: the server closing, or (dropped) the device
// moving to another replica, where the call can be made again.
func stoppedError(id string, dropped bool) error {
	if dropped {
		return domain.Wrap(domain.EUNAVAILABLE, domain.ErrMoving, "device "+id+" is moving to another replica; try again")
	}
	return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
}

// run is the owner: it applies inputs until the device stops, then waits
// for its jobs and closes what is left.
func (d *device) run() {
	go d.work()
	for {
		in, _ := d.inbox.pop()
		if ce, ok := in.(clientEvent); ok {
			if _, isConn := ce.Event.(domain.Connected); isConn {
				if c := d.clientOf(ce.Gen); c != nil {
					ce.Identity, _ = c.Identity()
				}
				in = ce
			}
		}
		m, effs := transition(d.m, in, d.svc.cfg.Clock.Now())
		old := d.m
		d.m = m
		// Published before the replies go out, so that a caller who gets
		// one reads the state it led to.
		d.publish(old)
		stopped := d.apply(effs)
		if stopped {
			break
		}
	}
	for _, t := range d.timers {
		t.Stop()
	}
	d.cancel()
	d.jobs.close()
	<-d.worked
	d.cmu.Lock()
	left := d.clients
	d.clients = map[uint64]*clientSlot{}
	d.cmu.Unlock()
	for _, cs := range left {
		cs.cancel()
		if cs.c != nil {
			d.closeQuietly(cs.c)
		}
	}
	d.inbox.close()
	close(d.done)
}

// work runs the device's jobs in order until the queue closes.
func (d *device) work() {
	defer close(d.worked)
	for {
		job, ok := d.jobs.pop()
		if !ok {
			return
		}
		job()
	}
}

func (d *device) job(f func()) { d.jobs.push(f) }

// apply carries out effects, in order; blocking ones become jobs. It tells
// whether the device stopped. Events are queued first, so that a caller
// answered by this transition finds them queued and can wait for them to
// be written (syncEvents).
func (d *device) apply(effs []effect) (stopped bool) {
	for _, e := range effs {
		if e, ok := e.(emit); ok {
			d.svc.emit(d.id, e.Type, e.Data)
		}
	}
	for _, e := range effs {
		switch e := e.(type) {
		case emit:
			// Queued above.
		case ackWritten:
			d.ackWritten(e.Done)
		case reply:
			if e.AfterJobs {
				d.job(func() { d.answer(e) })
			} else {
				d.answer(e)
			}
		case openPairing:
			d.openPairing(e)
		case askCode:
			d.askCode(e)
		case promote:
			d.promote(e)
		case discard:
			d.job(func() {
				if e.Key != "" {
					if err := d.svc.cfg.Sessions.Discard(e.Key); err != nil {
						d.svc.log.Warn("discarding pairing session", "device_id", d.id, "err", err)
					}
				}
				d.post(discarded{Gen: e.Gen})
			})
		case connect:
			d.connect(e)
		case closeClient:
			d.closeClient(e.Gen)
		case disconnect:
			if c := d.clientOf(e.Gen); c != nil {
				d.job(c.Disconnect)
			}
		case logout:
			d.logout(e)
		case remove:
			d.remove(e)
		case deleteSlot:
			d.deleteSlot(e)
		case save:
			slot := d.slot()
			d.job(func() {
				if err := d.svc.cfg.Registry.Put(context.WithoutCancel(d.ctx), slot); err != nil {
					d.svc.log.Error("recording the device in the registry", "device_id", d.id, "err", err)
				}
			})
		case startTimer:
			seq := e.Seq
			d.timers = append(d.timers, time.AfterFunc(d.svc.cfg.UnlinkWait, func() { d.post(timerFired{Seq: seq}) }))
		case observeLogin:
			d.svc.observeLogin(e.Method, e.Outcome)
		case warn:
			d.svc.log.Warn(e.Msg, "device_id", d.id, "state", d.m.State, "reason", d.m.Reason)
		case stop:
			d.svc.forget(d)
			stopped = true
		default:
			panic(fmt.Sprintf("device: unknown effect %T", e))
		}
	}
	return stopped
}

// answer sends r to its caller, if it still waits.
func (d *device) answer(r reply) {
	d.wmu.Lock()
	ch, ok := d.waiters[r.Op]
	delete(d.waiters, r.Op)
	d.wmu.Unlock()
	if ok {
		ch <- r
	}
}

// slot is the registry's view of the machine.
func (d *device) slot() domain.Slot {
	s := domain.Slot{ID: d.id, JID: d.m.JID, CreatedAt: d.createdAt}
	if d.m.State == domain.StateLoggedOut {
		s.Ended, s.EndedAt = d.m.Reason, d.m.Since
	}
	return s
}

// statusOf is what callers see of m.
func (d *device) statusOf(m machine) domain.Status {
	loggedIn := m.JID != "" && m.State != domain.StateLoggedOut
	st := domain.Status{
		DeviceID:  d.id,
		State:     m.State,
		Reason:    m.Reason,
		LoggedIn:  loggedIn,
		Connected: m.State == domain.StateConnected,
		Since:     m.Since,
		LastError: m.Detail,
		CreatedAt: d.createdAt,
	}
	if loggedIn {
		st.Identity = m.Identity
	}
	if m.State == domain.StatePairing {
		p := m.Pair
		st.Pairing = &domain.Pairing{Method: p.Method, QR: p.QR, Code: p.Code, ExpiresAt: p.ExpiresAt}
	}
	return st
}

// publish makes the machine visible to readers and wakes waiters when
// anything they can see changed.
func (d *device) publish(old machine) {
	st := d.statusOf(d.m)
	var c ports.Client
	if d.m.State == domain.StateConnected {
		c = d.clientOf(d.m.Gen)
	}
	d.mu.Lock()
	same := d.pub.State == st.State && d.pub.Reason == st.Reason && d.pub.LoggedIn == st.LoggedIn &&
		d.pub.Identity == st.Identity && d.pub.LastError == st.LastError && d.pub.Since.Equal(st.Since) &&
		samePairing(d.pub.Pairing, st.Pairing) && d.client == c && d.gen == d.m.Gen
	d.pub, d.client, d.gen = st, c, d.m.Gen
	if !same {
		close(d.changed)
		d.changed = make(chan struct{})
	}
	d.mu.Unlock()
	// Told outside the lock: the hook may read the device.
	if old.State != d.m.State || old.Reason != d.m.Reason {
		d.svc.transitioned(d.id, old, d.m)
	}
}

func samePairing(a, b *domain.Pairing) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

func (d *device) status() domain.Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pub
}

// view is what a sender needs: the state and the client to send on.
type view struct {
	state    domain.State
	loggedIn bool
	jid      string // the linked session's
	client   ports.Client
}

func (d *device) view() view {
	d.mu.Lock()
	defer d.mu.Unlock()
	return view{state: d.pub.State, loggedIn: d.pub.LoggedIn, jid: d.pub.Identity.JID, client: d.client}
}

// waitFor waits until ok holds for the device's view, ctx ends or the
// device stops.
func (d *device) waitFor(ctx context.Context, ok func(view) bool) (view, error) {
	for {
		d.mu.Lock()
		v := view{state: d.pub.State, loggedIn: d.pub.LoggedIn, jid: d.pub.Identity.JID, client: d.client}
		changed := d.changed
		d.mu.Unlock()
		if ok(v) {
			return v, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return v, ctx.Err()
		case <-d.done:
			return v, errShutdown
		}
	}
}

// errShutdown is returned to waits cut short by the device stopping.
var errShutdown = errors.New("device stopped")

// queue is an unbounded FIFO: pushing never blocks, so that clients'
// event callbacks and jobs never wait for the owner.
type queue[T any] struct {
	mu     sync.Mutex
	items  []T
	signal chan struct{}
	done   bool
}

func (q *queue[T]) init() { q.signal = make(chan struct{}, 1) }

func (q *queue[T]) push(v T) {
	q.mu.Lock()
	if !q.done {
		q.items = append(q.items, v)
	}
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

// pop returns the next item, waiting for one; false once closed and empty.
func (q *queue[T]) pop() (T, bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			v := q.items[0]
			var zero T
			q.items[0] = zero
			q.items = q.items[1:]
			q.mu.Unlock()
			return v, true
		}
		if q.done {
			q.mu.Unlock()
			var zero T
			return zero, false
		}
		q.mu.Unlock()
		<-q.signal
	}
}

// close stops accepting items; those queued are still popped.
func (q *queue[T]) close() {
	q.mu.Lock()
	q.done = true
	q.mu.Unlock()
	select {
	case q.signal <- struct{}{}:
	default:
	}
}
