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

// device is one slot. Its owner (step, on the inbox's drainer) is the only
// one that reads or writes its machine: API commands, client events, job
// results and timers all arrive in its inbox, one transition at a time.
// Blocking work runs on the job queue's drainer, in order, and reports
// back through the inbox. Nothing is ever held while waiting for I/O:
// callers wait for a reply or a published state, never for a lock.
//
// Both drainers are goroutines that exist only while their queue holds
// something (see lane): a linked device that is idle, as nearly all of
// them are nearly all the time, keeps no goroutine of its own.
type device struct {
	svc *Service
	id  string

	ctx    context.Context // the device's lifetime; clients and jobs run on it
	cancel context.CancelFunc
	inbox  lane[input]
	jobs   lane[func()]
	done   chan struct{} // closed when the owner has stopped and every job ended
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

// post queues an input for the owner, starting its drainer if none runs;
// it never blocks.
func (d *device) post(in input) {
	if d.inbox.push(in) {
		go d.own()
	}
}

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

// own is the owner: it applies inputs until the inbox is empty, and
// returns to be started again by the next post. When an input stops the
// device, it waits for the device's jobs and closes what is left.
func (d *device) own() {
	for {
		in, ok := d.inbox.next()
		if !ok {
			return
		}
		if d.step(in) {
			break
		}
	}
	// Stopped: this drainer never asks for another input, so later posts
	// queue without starting one, and the inbox closes below.
	for _, t := range d.timers {
		t.Stop()
	}
	d.cancel()
	<-d.jobs.close()
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

// step applies one input; it tells whether the device stopped.
func (d *device) step(in input) (stopped bool) {
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
	return d.apply(effs)
}

// work runs the device's jobs in order until the queue is empty.
func (d *device) work() {
	for {
		job, ok := d.jobs.next()
		if !ok {
			return
		}
		job()
	}
}

// job queues f on the device's jobs, starting their drainer if none runs.
func (d *device) job(f func()) {
	if d.jobs.push(f) {
		go d.work()
	}
}

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

// lane is an unbounded FIFO whose consumer, the drainer, is a goroutine
// that runs only while items are queued: push tells its caller to start
// one when none runs, and next ends it (false) once the lane is empty. At
// most one drainer runs at a time, so items are taken one after another,
// in order. Pushing never blocks, so that clients' event callbacks and jobs
// never wait for the owner.
//
// A goroutine parked on an empty queue would cost its stack (a few
// kilobytes) for as long as the device lives, twice per device; hundreds
// of idle devices made that a visible share of the gateway's memory.
type lane[T any] struct {
	mu      sync.Mutex
	items   []T
	running bool // a drainer runs: it will take what is pushed
	closed  bool
	drained chan struct{} // closed once the lane is closed and no drainer runs
}

func (q *lane[T]) init() { q.drained = make(chan struct{}) }

// push queues v and tells whether the caller must start a drainer. Items
// pushed once the lane is closed are dropped.
func (q *lane[T]) push(v T) (start bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	q.items = append(q.items, v)
	if q.running {
		return false
	}
	q.running = true
	return true
}

// next is the drainer's: the next item, or false when the lane is empty,
// in which case the caller is no longer the drainer and must return.
func (q *lane[T]) next() (T, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	var zero T
	if len(q.items) == 0 {
		q.running = false
		q.items = nil // let an emptied backlog's array go
		if q.closed {
			close(q.drained)
		}
		return zero, false
	}
	v := q.items[0]
	q.items[0] = zero
	q.items = q.items[1:]
	return v, true
}

// close stops accepting items; those queued are still taken by the
// drainer. The channel it returns is closed once none is left running.
func (q *lane[T]) close() <-chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		if !q.running {
			close(q.drained)
		}
	}
	return q.drained
}
