package events

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// Filter selects events: by device (any of Devices) and by type. Empty
// parts match everything.
type Filter struct {
	Devices []string
	Types   domain.TypeFilter
}

// Match reports whether ev passes the filter. stream.gap always does.
func (f Filter) Match(ev domain.LiveEvent) bool {
	if ev.Type == domain.EventStreamGap {
		return true
	}
	if len(f.Devices) > 0 && !slices.Contains(f.Devices, ev.DeviceID) {
		return false
	}
	return f.Types.Match(ev.Type)
}

// readPage is how many events a catch-up reads from the log at a time.
const readPage = 256

// Subscription is one reader of the event stream: first the events it
// missed, read from the log, then live ones. Call Next until it fails, then
// Close.
type Subscription struct {
	hub    *Hub
	filter Filter

	pending  []domain.LiveEvent // read from the log, not yet returned
	cursor   int64              // last id returned or skipped
	catchUp  int64              // ids up to this one come from the log; above, from ch
	ch       chan domain.LiveEvent
	done     chan struct{}
	doneOnce sync.Once
	err      error
}

// Subscribe opens a subscription. With resume set it starts after the event
// with id after, reading the log first; a resume point the log no longer
// holds (pruned, or an id this gateway never gave) starts with a
// stream.gap event, then the oldest kept. Without resume it starts with the
// next event.
func (h *Hub) Subscribe(ctx context.Context, f Filter, after int64, resume bool) (*Subscription, error) {
	s := &Subscription{
		hub:    h,
		filter: f,
		ch:     make(chan domain.LiveEvent, h.cfg.SubscriberBuffer),
		done:   make(chan struct{}),
	}
	var gap *domain.LiveEvent
	if resume {
		var err error
		if after, gap, err = h.resumePoint(ctx, after); err != nil {
			return nil, err
		}
	}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	h.subs[s] = struct{}{}
	s.catchUp = h.lastID
	h.mu.Unlock()
	if !resume {
		after = s.catchUp
	}
	s.cursor = after
	if gap != nil {
		s.pending = append(s.pending, *gap)
	}
	return s, nil
}

// resumePoint checks a resume id against the log, returning where to read
// from and the stream.gap event to send first, if any.
func (h *Hub) resumePoint(ctx context.Context, after int64) (int64, *domain.LiveEvent, error) {
	oldest, last, err := h.cfg.Store.Bounds(ctx)
	if err != nil {
		return 0, nil, storeError(err, "read the event log")
	}
	next := oldest
	if oldest == 0 {
		next = last + 1 // everything was pruned
	}
	switch {
	case after == 0:
		// A reader that has seen nothing yet reads from the oldest kept;
		// what retention dropped before it came is no gap of its own.
		return next - 1, nil, nil
	case after > last:
		// Not an id of this gateway (another one's, or its storage was
		// reset): everything kept is news to this reader.
		return next - 1, h.gap(after, next), nil
	case after+1 < next:
		return next - 1, h.gap(after, next), nil
	}
	return after, nil, nil
}

// gap makes the stream.gap event. Its id is the one before next, so that a
// reader resuming from it reads on from next without a second gap.
func (h *Hub) gap(after, next int64) *domain.LiveEvent {
	raw, _ := jsonMarshal(domain.GapEventData{LastEventID: after, Next: next})
	return &domain.LiveEvent{ID: next - 1, Type: domain.EventStreamGap, Time: h.cfg.Clock.Now().UTC(), Data: raw}
}

// Next returns the next event, waiting for one. It fails with ErrLagged
// when the reader fell too far behind, ErrClosed at shutdown, or ctx's
// error.
func (s *Subscription) Next(ctx context.Context) (domain.LiveEvent, error) {
	ev, _, err := s.NextOrTick(ctx, nil)
	return ev, err
}

// NextOrTick is Next that also returns, with false, when tick fires while
// it waits: the stream writes a heartbeat then.
func (s *Subscription) NextOrTick(ctx context.Context, tick <-chan time.Time) (domain.LiveEvent, bool, error) {
	for {
		if len(s.pending) > 0 {
			ev := s.pending[0]
			s.pending = s.pending[1:]
			s.cursor = max(s.cursor, ev.ID)
			return ev, true, nil
		}
		if s.cursor < s.catchUp {
			if err := s.readLog(ctx); err != nil {
				return domain.LiveEvent{}, false, err
			}
			continue
		}
		// Buffered events come before the end of the subscription: a
		// reader cut off resumes after the last one it got.
		select {
		case ev := <-s.ch:
			if ev.ID > s.cursor {
				s.cursor = ev.ID
				return ev, true, nil
			}
			continue
		default:
		}
		select {
		case ev := <-s.ch:
			if ev.ID > s.cursor {
				s.cursor = ev.ID
				return ev, true, nil
			}
		case <-s.done:
			if len(s.ch) == 0 {
				return domain.LiveEvent{}, false, s.err
			}
		case <-tick:
			return domain.LiveEvent{}, false, nil
		case <-ctx.Done():
			return domain.LiveEvent{}, false, ctx.Err()
		}
	}
}

// readLog reads the next page of missed events into s.pending.
func (s *Subscription) readLog(ctx context.Context) error {
	evs, err := s.hub.cfg.Store.Read(ctx, s.cursor, readPage)
	if err != nil {
		return storeError(err, "read the event log")
	}
	if len(evs) == 0 {
		s.cursor = s.catchUp
		return nil
	}
	for _, ev := range evs {
		if ev.ID > s.catchUp {
			break
		}
		s.cursor = ev.ID
		if s.filter.Match(ev) {
			s.pending = append(s.pending, ev)
		}
	}
	if evs[len(evs)-1].ID >= s.catchUp {
		s.cursor = s.catchUp
	}
	return nil
}

// Close ends the subscription.
func (s *Subscription) Close() {
	s.hub.mu.Lock()
	delete(s.hub.subs, s)
	s.hub.mu.Unlock()
	s.end(ErrClosed)
}

// end stops the subscription with err; the first call wins.
func (s *Subscription) end(err error) {
	s.doneOnce.Do(func() {
		s.err = err
		close(s.done)
	})
}

// Page reads up to limit events after id after that pass f, for clients
// that poll instead of holding a stream. It returns the events and the id
// to ask after next time (the last one looked at, which may be past the
// last one returned when the filter skipped some). An after older than
// retention starts the page with stream.gap.
func (h *Hub) Page(ctx context.Context, f Filter, after int64, limit int) ([]domain.LiveEvent, int64, error) {
	after, gap, err := h.resumePoint(ctx, after)
	if err != nil {
		return nil, 0, err
	}
	out := make([]domain.LiveEvent, 0, min(limit, readPage))
	if gap != nil {
		out = append(out, *gap)
	}
	// Look at a bounded number of events, so that a narrow filter over a
	// long log answers quickly; the cursor says where to go on.
	for scanned := 0; len(out) < limit && scanned < 50*readPage; {
		evs, err := h.cfg.Store.Read(ctx, after, readPage)
		if err != nil {
			return nil, 0, storeError(err, "read the event log")
		}
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			after = ev.ID
			scanned++
			if f.Match(ev) {
				out = append(out, ev)
				if len(out) == limit {
					break
				}
			}
		}
	}
	return out, after, nil
}
