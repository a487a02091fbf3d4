package events_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// memStore is the in-memory event store the domain tests use; it passes
// the same contract suite as the SQLite one.
type memStore struct {
	mu       sync.Mutex
	events   []domain.LiveEvent
	seq      int64
	outbox   []domain.Delivery
	outSeq   int64
	webhooks map[string]domain.Webhook
	failNext int // Append fails this many more times
	reads    int // Pending calls so far
}

// pendingReads tells how many times the outbox has been read.
func (m *memStore) pendingReads() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads
}

func newMemStore() *memStore { return &memStore{webhooks: map[string]domain.Webhook{}} }

func (m *memStore) Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if m.failNext > 0 {
		m.failNext--
		return nil, context.DeadlineExceeded
	}
	out := make([]domain.LiveEvent, len(evs))
	var queued []domain.Delivery
	seq, outSeq := m.seq, m.outSeq
	for i, ev := range evs {
		seq++
		ev.ID = seq
		if len(ev.Data) == 0 {
			ev.Data = json.RawMessage("{}")
		}
		out[i] = ev
		if route == nil {
			continue
		}
		body, err := json.Marshal(ev)
		if err != nil {
			return nil, err
		}
		for _, ep := range route(ev) {
			outSeq++
			queued = append(queued, domain.Delivery{ID: outSeq, Endpoint: ep, DeviceID: ev.DeviceID, EventID: ev.ID, Type: ev.Type, Body: body, CreatedAt: ev.Time})
		}
	}
	m.seq, m.outSeq = seq, outSeq
	m.events = append(m.events, out...)
	m.outbox = append(m.outbox, queued...)
	return slices.Clone(out), nil
}

func (m *memStore) Read(ctx context.Context, after int64, limit int) ([]domain.LiveEvent, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []domain.LiveEvent
	for _, ev := range m.events {
		if ev.ID > after && len(out) < limit {
			out = append(out, ev)
		}
	}
	return out, nil
}

func (m *memStore) Bounds(ctx context.Context) (int64, int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 {
		return 0, m.seq, nil
	}
	return m.events[0].ID, m.seq, nil
}

func (m *memStore) Prune(ctx context.Context, before time.Time, keep int) (int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := len(m.events)
	m.events = slices.DeleteFunc(m.events, func(ev domain.LiveEvent) bool { return ev.Time.Before(before) })
	if keep > 0 && len(m.events) > keep {
		m.events = slices.Clone(m.events[len(m.events)-keep:])
	}
	return int64(n - len(m.events)), nil
}

func (m *memStore) Pending(ctx context.Context, endpoint string, skip []string, limit int) ([]domain.Delivery, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	var out []domain.Delivery
	for _, d := range m.outbox {
		if d.Endpoint == endpoint && !slices.Contains(skip, d.DeviceID) && len(out) < limit {
			out = append(out, d)
		}
	}
	return out, nil
}

func (m *memStore) Done(ctx context.Context, ids ...int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outbox = slices.DeleteFunc(m.outbox, func(d domain.Delivery) bool { return slices.Contains(ids, d.ID) })
	return nil
}

func (m *memStore) Retry(ctx context.Context, id int64, attempts int, next time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range m.outbox {
		if m.outbox[i].ID == id {
			m.outbox[i].Attempts = attempts
			m.outbox[i].NextAt = next
		}
	}
	return nil
}

func (m *memStore) Depth(ctx context.Context) (map[string]ports.OutboxDepth, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]ports.OutboxDepth{}
	for _, d := range m.outbox {
		x := out[d.Endpoint]
		x.Pending++
		if x.Oldest.IsZero() || d.CreatedAt.Before(x.Oldest) {
			x.Oldest = d.CreatedAt
		}
		out[d.Endpoint] = x
	}
	return out, nil
}

func (m *memStore) DropEndpoint(ctx context.Context, endpoint string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.outbox = slices.DeleteFunc(m.outbox, func(d domain.Delivery) bool { return d.Endpoint == endpoint })
	return nil
}

func (m *memStore) PutWebhook(ctx context.Context, w domain.Webhook) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	w.Events = slices.Clone(w.Events)
	m.webhooks[w.DeviceID] = w
	return nil
}

func (m *memStore) DeleteWebhook(ctx context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.webhooks, id)
	return nil
}

func (m *memStore) ListWebhooks(ctx context.Context) ([]domain.Webhook, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []domain.Webhook
	for _, w := range m.webhooks {
		out = append(out, w)
	}
	slices.SortFunc(out, func(a, b domain.Webhook) int {
		if a.DeviceID < b.DeviceID {
			return -1
		}
		if a.DeviceID > b.DeviceID {
			return 1
		}
		return 0
	})
	return out, nil
}
