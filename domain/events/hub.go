// Package events is the gateway's live event service: it writes every event
// the devices emit to the durable event log, then tells the event stream's
// subscribers and queues webhook deliveries (in the same write), and runs
// the webhook dispatchers that drain the outbox. Nothing here waits on a
// reader or a receiver while a device is waiting on it.
package events

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Store is what the hub keeps on disk: the event log, the outbox filled in
// the same write, and the devices' webhooks.
type Store interface {
	ports.EventLog
	ports.Outbox
	ports.Webhooks
}

// Config is what the hub needs. Store is required; the rest have defaults.
type Config struct {
	Store  Store
	Sender ports.WebhookSender // nil: webhooks are stored but never sent
	Clock  ports.Clock
	Logger *slog.Logger

	// Global are the webhooks from the configuration, sent every device's
	// events.
	Global []domain.Webhook

	// Retention and RetentionCount bound the event log: events older than
	// Retention, and the oldest beyond the newest RetentionCount, are
	// dropped every PruneEvery. Defaults 24 h, 1,000,000 and 1 min.
	Retention      time.Duration
	RetentionCount int
	PruneEvery     time.Duration

	// SubscriberBuffer is how many events a stream subscriber may fall
	// behind before it is cut off (it resumes by id). Default 1024.
	SubscriberBuffer int

	// Webhook delivery: the first retry waits RetryBase (default 1 s),
	// each next one twice as long up to RetryMax (default 10 min), with
	// jitter; a delivery is given up MaxDeliveryAge after its event
	// (default 24 h). Rand returns a number in [0, 1) for the jitter.
	RetryBase      time.Duration
	RetryMax       time.Duration
	MaxDeliveryAge time.Duration
	Rand           func() float64
	// RetryPoll bounds how long a dispatcher sleeps before looking at the
	// clock again while retries are pending. Default 1 s.
	RetryPoll time.Duration
	// DeliveryParallelism bounds the devices one endpoint is sent to at
	// once (each device's events go one at a time). Default 8.
	DeliveryParallelism int

	// Shared is set when other gateways append to the same log (replicas
	// on one PostgreSQL); nil when the log is this process's own.
	Shared *Shared

	// Deliver, when set, gates webhook deliveries: the dispatchers send
	// only while it returns true (when several replicas share the outbox,
	// only one of them delivers, so that each device's events keep their
	// order). nil: always deliver. Call WakeDispatchers when it turns true.
	Deliver func() bool

	// Observers for metrics; either may be nil. OnEvent sees the events
	// this hub wrote, not those of other replicas.
	OnEvent    func(domain.EventType)
	OnDelivery func(endpoint, outcome string)
}

// Shared tells a hub that its log, outbox and webhooks are shared with
// other gateways. Its streams then tell what the hub reads from the log,
// in id order, its own events and the others' alike: it reads after each
// of its own writes and whenever Appended fires. Webhooks fires when a
// device's webhook may have been changed elsewhere: the hub reloads them.
// Either channel may be closed when its source stops; it is then ignored.
type Shared struct {
	Appended <-chan struct{}
	Webhooks <-chan struct{}
}

// Delivery outcomes, as OnDelivery reports them.
const (
	OutcomeDelivered = "delivered" // the receiver answered 2xx
	OutcomeRetry     = "retry"     // a network error, timeout, 408, 429 or 5xx: tried again later
	OutcomeRejected  = "rejected"  // another 3xx or 4xx: not tried again
	OutcomeExpired   = "expired"   // still failing MaxDeliveryAge after the event: given up
)

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }

// ErrLagged ends a subscription whose reader fell more than
// SubscriberBuffer events behind; it resumes from the last id it got.
var ErrLagged = errors.New("the reader fell too far behind; resume from the last event id")

// ErrClosed ends subscriptions when the hub closes.
var ErrClosed = errors.New("the event service is shutting down")

// Hub is the event service. Create it with New, Start it, Close it last.
type Hub struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	qmu     sync.Mutex
	queue   []domain.LiveEvent // emitted, not yet written
	qsignal chan struct{}
	qclosed bool
	emitted uint64        // events queued so far
	written uint64        // of those, written to the log
	wrote   chan struct{} // closed and replaced whenever written grows
	flushed chan struct{} // closed by the writer when it has written all and stopped
	follow  chan struct{} // shared log: the writer wrote; read the log

	mu     sync.Mutex
	lastID int64
	subs   map[*Subscription]struct{}
	hooks  map[string]*endpoint // by endpoint key
	// retiring are the webhooks of deleted devices, draining what they
	// still have (device.deleted among it) before they go.
	retiring map[string]*endpoint

	// smu guards busy, the delivery workers at work, and quiet, closed
	// when busy falls to zero (see WaitDeliveries).
	smu   sync.Mutex
	busy  int
	quiet chan struct{}

	// hookOps serialises changes to the stored webhooks (set, delete, a
	// retired one's removal), which pair a store write with the maps.
	hookOps sync.Mutex
	closed  bool

	started bool
}

// New returns a hub; Start opens it.
func New(cfg Config) *Hub {
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	cfg.Retention = cmp.Or(cfg.Retention, 24*time.Hour)
	cfg.RetentionCount = cmp.Or(cfg.RetentionCount, 1_000_000)
	cfg.PruneEvery = cmp.Or(cfg.PruneEvery, time.Minute)
	cfg.SubscriberBuffer = cmp.Or(cfg.SubscriberBuffer, 1024)
	cfg.RetryBase = cmp.Or(cfg.RetryBase, time.Second)
	cfg.RetryMax = cmp.Or(cfg.RetryMax, 10*time.Minute)
	cfg.MaxDeliveryAge = cmp.Or(cfg.MaxDeliveryAge, 24*time.Hour)
	cfg.RetryPoll = cmp.Or(cfg.RetryPoll, time.Second)
	cfg.DeliveryParallelism = cmp.Or(cfg.DeliveryParallelism, 8)
	ctx, cancel := context.WithCancel(context.Background())
	return &Hub{
		cfg:      cfg,
		log:      cfg.Logger,
		ctx:      ctx,
		cancel:   cancel,
		qsignal:  make(chan struct{}, 1),
		follow:   make(chan struct{}, 1),
		wrote:    make(chan struct{}),
		flushed:  make(chan struct{}),
		subs:     map[*Subscription]struct{}{},
		hooks:    map[string]*endpoint{},
		retiring: map[string]*endpoint{},
	}
}

// Start reads where the log stands, drops the outbox of endpoints no longer
// configured, and starts the writer, the pruner and a dispatcher per
// webhook, which resume whatever the outbox holds.
func (h *Hub) Start(ctx context.Context) error {
	_, last, err := h.cfg.Store.Bounds(ctx)
	if err != nil {
		return storeError(err, "read the event log")
	}
	h.lastID = last
	for _, w := range h.cfg.Global {
		if err := domain.ValidateWebhook(w); err != nil {
			return err
		}
		h.hooks[globalKey(w.URL)] = h.newEndpoint(globalKey(w.URL), w)
	}
	// The backlog is read before the webhooks, so that a webhook another
	// replica sets meanwhile never has its fresh deliveries dropped.
	depth, err := h.cfg.Store.Depth(ctx)
	if err != nil {
		return storeError(err, "read the webhook outbox")
	}
	stored, err := h.cfg.Store.ListWebhooks(ctx)
	if err != nil {
		return storeError(err, "read the webhooks")
	}
	var since int64
	if h.cfg.Shared != nil {
		if _, since, err = h.cfg.Store.Bounds(ctx); err != nil {
			return storeError(err, "read the event log")
		}
	}
	for _, w := range stored {
		e := h.newEndpoint(deviceKey(w.DeviceID), w)
		e.since = since
		h.hooks[e.key] = e
	}
	for key, d := range depth {
		if _, ok := h.hooks[key]; !ok {
			h.log.Warn("dropping the undelivered events of a webhook no longer configured", "endpoint", label(key), "pending", d.Pending)
			if err := h.cfg.Store.DropEndpoint(ctx, key); err != nil {
				return storeError(err, "drop an old webhook's outbox")
			}
		}
	}
	h.started = true
	h.wg.Add(2)
	go func() { defer h.wg.Done(); h.writer() }()
	go func() { defer h.wg.Done(); h.pruner() }()
	if h.cfg.Shared != nil {
		h.wg.Add(1)
		go func() { defer h.wg.Done(); h.follower() }()
	}
	for _, e := range h.hooks {
		h.startEndpoint(e)
	}
	return nil
}

// Close writes what was emitted so far, ends every subscription and stops
// the dispatchers; undelivered webhooks stay in the outbox for the next
// start.
func (h *Hub) Close() error {
	h.qmu.Lock()
	if h.qclosed {
		h.qmu.Unlock()
		return nil
	}
	h.qclosed = true
	h.qmu.Unlock()
	if !h.started {
		h.cancel()
		return nil
	}
	h.signal()
	// The writer drains the queue before it stops, unless the log keeps
	// failing; do not wait for ever on a broken disk.
	select {
	case <-h.flushed:
	case <-time.After(10 * time.Second):
		h.log.Error("event log writes kept failing at shutdown; unwritten events are lost")
	}
	h.cancel()
	h.mu.Lock()
	h.closed = true
	for s := range h.subs {
		s.end(ErrClosed)
	}
	h.mu.Unlock()
	h.wg.Wait()
	return nil
}

// Emit queues an event for the log. It never blocks on I/O, so the device
// service may call it under its locks; the event gets its id when written.
// An event emitted after Close is dropped and logged.
func (h *Hub) Emit(deviceID string, typ domain.EventType, data any) {
	raw, err := json.Marshal(data)
	if err != nil || data == nil {
		raw = json.RawMessage("{}")
	}
	ev := domain.LiveEvent{Type: typ, DeviceID: deviceID, Time: h.cfg.Clock.Now().UTC(), Data: raw}
	h.qmu.Lock()
	if h.qclosed {
		h.qmu.Unlock()
		h.log.Warn("event emitted after shutdown began; dropped", "type", typ, "device_id", deviceID)
		return
	}
	h.queue = append(h.queue, ev)
	h.emitted++
	h.qmu.Unlock()
	h.signal()
}

var _ ports.Events = (*Hub)(nil)

// Sync returns once every event emitted before the call is in the log, so
// that an API call that caused events can answer only once they are
// durable. It fails when ctx ends or the hub stops first.
func (h *Hub) Sync(ctx context.Context) error {
	h.qmu.Lock()
	target := h.emitted
	h.qmu.Unlock()
	for {
		h.qmu.Lock()
		done, wrote := h.written >= target, h.wrote
		h.qmu.Unlock()
		if done {
			return nil
		}
		select {
		case <-wrote:
		case <-h.flushed:
			h.qmu.Lock()
			done = h.written >= target
			h.qmu.Unlock()
			if done {
				return nil
			}
			return ErrClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (h *Hub) signal() {
	select {
	case h.qsignal <- struct{}{}:
	default:
	}
}

// writeBatch bounds how many queued events go into one transaction.
const writeBatch = 512

// writer writes queued events to the log in order, in batches, then tells
// subscribers and wakes dispatchers. It drains the queue after Close.
func (h *Hub) writer() {
	defer close(h.flushed)
	failures := 0
	for {
		h.qmu.Lock()
		n := min(len(h.queue), writeBatch)
		batch := h.queue[:n:n]
		closed := h.qclosed
		h.qmu.Unlock()
		if n == 0 {
			if closed {
				return
			}
			<-h.qsignal
			continue
		}
		woken := map[*endpoint]bool{}
		written, err := h.cfg.Store.Append(context.Background(), batch, func(ev domain.LiveEvent) []string {
			return h.route(ev, woken)
		})
		if err != nil {
			failures++
			h.log.Error("writing events to the log; retrying", "err", err, "queued", n)
			if closed && failures > 3 {
				return
			}
			select {
			case <-time.After(min(time.Duration(failures)*100*time.Millisecond, 2*time.Second)):
			case <-h.ctx.Done():
			}
			continue
		}
		failures = 0
		h.qmu.Lock()
		h.queue = h.queue[n:]
		if len(h.queue) == 0 {
			h.queue = nil
		}
		h.written += uint64(n)
		close(h.wrote)
		h.wrote = make(chan struct{})
		h.qmu.Unlock()
		if h.cfg.Shared == nil {
			h.publish(written, true)
		} else {
			// The follower tells the streams, in log order, with the
			// other replicas' events.
			if h.cfg.OnEvent != nil {
				for _, ev := range written {
					h.cfg.OnEvent(ev.Type)
				}
			}
			select {
			case h.follow <- struct{}{}:
			default:
			}
		}
		for e := range woken {
			e.wake()
		}

	}
}

// route names the endpoints ev goes to, noting them in woken.
func (h *Hub) route(ev domain.LiveEvent, woken map[*endpoint]bool) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var keys []string
	for key, e := range h.hooks {
		if e.hook.DeviceID != "" && e.hook.DeviceID != ev.DeviceID {
			continue
		}
		if !e.hook.Events.Match(ev.Type) {
			continue
		}
		keys = append(keys, key)
		woken[e] = true
	}
	if ev.Type == domain.EventDeviceDeleted {
		// The device's own webhook gets device.deleted and nothing later
		// (a device created again with the id starts without it). On a
		// write that is retried, it is already retiring: route it there.
		key := deviceKey(ev.DeviceID)
		if e := h.retiring[key]; e != nil && e.hook.Events.Match(ev.Type) && !slices.Contains(keys, key) {
			keys = append(keys, key)
			woken[e] = true
		}
		if e := h.hooks[key]; e != nil {
			delete(h.hooks, key)
			h.retiring[key] = e
			e.retiring.Store(true)
			woken[e] = true
		}
	}
	return keys
}

// publish tells the subscribers of newly written events, cutting off those
// whose buffer is full; count: and the OnEvent observer.
func (h *Hub) publish(evs []domain.LiveEvent, count bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		h.lastID = ev.ID
		if count && h.cfg.OnEvent != nil {
			h.cfg.OnEvent(ev.Type)
		}
		for s := range h.subs {
			if !s.filter.Match(ev) {
				continue
			}
			select {
			case s.ch <- ev:
			default:
				delete(h.subs, s)
				s.end(ErrLagged)
			}
		}
	}
}

// pruner applies the retention every PruneEvery.
func (h *Hub) pruner() {
	t := time.NewTicker(h.cfg.PruneEvery)
	defer t.Stop()
	for {
		h.Prune(h.ctx)
		select {
		case <-t.C:
		case <-h.ctx.Done():
			return
		}
	}
}

// Prune drops the events past retention now.
func (h *Hub) Prune(ctx context.Context) {
	n, err := h.cfg.Store.Prune(ctx, h.cfg.Clock.Now().Add(-h.cfg.Retention), h.cfg.RetentionCount)
	switch {
	case err != nil && ctx.Err() == nil:
		h.log.Error("pruning the event log", "err", err)
	case n > 0:
		h.log.Debug("event log pruned", "dropped", n)
	}
}

// Subscribers counts the open event-stream subscriptions.
func (h *Hub) Subscribers() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs)
}

// OutboxDepth returns each webhook endpoint's backlog, by endpoint label
// ("device:<id>", or "global:<URL without credentials or query>"); an
// endpoint with nothing pending is listed with zero.
func (h *Hub) OutboxDepth(ctx context.Context) (map[string]ports.OutboxDepth, error) {
	depth, err := h.cfg.Store.Depth(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]ports.OutboxDepth{}
	h.mu.Lock()
	for key := range h.hooks {
		out[label(key)] = depth[key]
	}
	h.mu.Unlock()
	return out, nil
}

// CloseStreams ends every open subscription, so that event streams end
// when the HTTP server shuts down rather than holding it until its grace
// runs out; their readers resume by id.
func (h *Hub) CloseStreams() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		delete(h.subs, s)
		s.end(ErrClosed)
	}
}
