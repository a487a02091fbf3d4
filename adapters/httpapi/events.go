package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// Events is what the handlers need of the event service.
type Events interface {
	Subscribe(ctx context.Context, f events.Filter, after int64, resume bool) (*events.Subscription, error)
	Page(ctx context.Context, f events.Filter, after int64, limit int) ([]domain.LiveEvent, int64, error)
	DeviceWebhook(id string) (domain.Webhook, bool)
	SetDeviceWebhook(ctx context.Context, w domain.Webhook) error
	DeleteDeviceWebhook(ctx context.Context, id string) (bool, error)
}

var _ Events = (*events.Hub)(nil)

var errNoEvents = domain.Errorf(domain.ENOTFOUND, "events are not enabled")

// requestKey carries the *http.Request into strict handlers that need more
// of it than the generated request object holds (the Accept header).
type requestKey struct{}

func withRequest(f api.StrictHandlerFunc, _ string) api.StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, req any) (any, error) {
		return f(context.WithValue(ctx, requestKey{}, r), w, r, req)
	}
}

// wantsJSON reports whether the client asked for a JSON page rather than a
// stream: Accept names application/json and not text/event-stream.
func wantsJSON(ctx context.Context) bool {
	r, _ := ctx.Value(requestKey{}).(*http.Request)
	if r == nil {
		return false
	}
	json, stream := false, false
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		mt, _, err := mime.ParseMediaType(strings.TrimSpace(part))
		if err != nil {
			continue
		}
		switch mt {
		case "application/json":
			json = true
		case "text/event-stream":
			stream = true
		}
	}
	return json && !stream
}

func (s *server) GetEvents(ctx context.Context, req api.GetEventsRequestObject) (api.GetEventsResponseObject, error) {
	if s.events == nil {
		return nil, errNoEvents
	}
	p := req.Params
	var f events.Filter
	if p.DeviceID != nil {
		for _, id := range *p.DeviceID {
			if err := domain.ValidateDeviceID(id); err != nil {
				return nil, invalid("device_id", err.Error())
			}
		}
		f.Devices = *p.DeviceID
	}
	if p.Type != nil {
		types, err := domain.ParseTypeFilter(*p.Type)
		if err != nil {
			return nil, invalid("type", err.Error())
		}
		f.Types = types
	}
	if wantsJSON(ctx) {
		after := int64(0)
		if p.After != nil {
			after = *p.After
		}
		limit := 100
		if p.Limit != nil {
			limit = *p.Limit
		}
		if after < 0 {
			return nil, invalid("after", "must not be negative")
		}
		if limit < 1 || limit > 1000 {
			return nil, invalid("limit", "must be 1 to 1000")
		}
		evs, next, err := s.events.Page(ctx, f, after, limit)
		if err != nil {
			return nil, err
		}
		return eventPage{Events: evs, NextAfter: next}, nil
	}
	var (
		after  int64
		resume bool
	)
	if p.LastEventIDHeader != nil && *p.LastEventIDHeader != "" {
		id, err := strconv.ParseInt(*p.LastEventIDHeader, 10, 64)
		if err != nil || id < 0 {
			return nil, invalid("Last-Event-ID", "must be an event id")
		}
		after, resume = id, true
	} else if p.LastEventID != nil {
		if *p.LastEventID < 0 {
			return nil, invalid("last_event_id", "must not be negative")
		}
		after, resume = *p.LastEventID, true
	}
	sub, err := s.events.Subscribe(ctx, f, after, resume)
	if err != nil {
		return nil, err
	}
	return eventStream{ctx: ctx, sub: sub, heartbeat: s.heartbeat, log: s.log, frames: &s.frames}, nil
}

// eventPage is the JSON page: the events as the log holds them, in the
// envelope.
type eventPage struct {
	Events    []domain.LiveEvent `json:"events"`
	NextAfter int64              `json:"next_after"`
}

func (p eventPage) VisitGetEventsResponse(w http.ResponseWriter) error {
	envelope.Write(w, http.StatusOK, ok, p)
	return nil
}

// eventStream writes a subscription as Server-Sent Events until the client
// leaves, falls behind, or the server shuts down.
type eventStream struct {
	ctx       context.Context
	sub       *events.Subscription
	heartbeat time.Duration
	log       *slog.Logger
	frames    *frameCache
}

// streamWriteTimeout bounds each write to a stream: a client that stops
// reading is cut off rather than holding a goroutine for ever.
const streamWriteTimeout = 30 * time.Second

func (s eventStream) VisitGetEventsResponse(w http.ResponseWriter) error {
	defer s.sub.Close()
	rc := http.NewResponseController(w)
	// A server-wide write deadline would end every stream after a few
	// seconds: each write gets its own instead.
	_ = rc.SetWriteDeadline(time.Time{})
	// Nor may a read deadline end it: only the client, a cut-off or
	// shutdown do.
	_ = rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) error {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if err := write([]byte("retry: 2000\n: connected\n\n")); err != nil {
		return nil
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	var buf []byte
	for {
		ev, got, err := s.sub.NextOrTick(s.ctx, beat.C)
		switch {
		case got:
			// Take every event already waiting before one write and one
			// flush: a busy stream costs a syscall per burst, not per event.
			buf = append(buf[:0], s.frames.frame(ev)...)
			for len(buf) < 64<<10 {
				more, ok, _ := s.sub.NextOrTick(s.ctx, closedTick)
				if !ok {
					break
				}
				buf = append(buf, s.frames.frame(more)...)
			}
			if err := write(buf); err != nil {
				return nil // the client left
			}
		case err == nil: // the heartbeat
			if err := write([]byte(": heartbeat\n\n")); err != nil {
				return nil
			}
		case errors.Is(err, events.ErrLagged):
			_ = write([]byte(": cut off: this reader fell too far behind; reconnect with Last-Event-ID\n\n"))
			return nil
		case errors.Is(err, events.ErrClosed):
			_ = write([]byte(": the server is shutting down; reconnect with Last-Event-ID\n\n"))
			return nil
		default:
			if s.ctx.Err() == nil {
				s.log.Error("event stream failed", "err", err)
			}
			return nil
		}
	}
}

// closedTick makes NextOrTick return at once when no event is waiting.
var closedTick = func() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}()

// frameCache keeps the Server-Sent Events frames of recent events, so that
// a thousand streams encode each event once, not a thousand times.
type frameCache struct {
	mu     sync.Mutex
	frames map[int64][]byte
}

// maxFrames bounds the cache; it is emptied when full.
const maxFrames = 4096

// frame returns ev as "id: …\nevent: …\ndata: <JSON>\n\n".
func (c *frameCache) frame(ev domain.LiveEvent) []byte {
	cacheable := ev.Type != domain.EventStreamGap // a gap's id is made up
	if cacheable {
		c.mu.Lock()
		f, ok := c.frames[ev.ID]
		c.mu.Unlock()
		if ok {
			return f
		}
	}
	b, err := json.Marshal(ev)
	if err != nil {
		b = []byte(`{}`)
	}
	f := make([]byte, 0, len(b)+64)
	f = append(f, "id: "...)
	f = strconv.AppendInt(f, ev.ID, 10)
	f = append(f, "\nevent: "...)
	f = append(f, ev.Type...)
	f = append(f, "\ndata: "...)
	f = append(f, b...)
	f = append(f, "\n\n"...)
	if cacheable {
		c.mu.Lock()
		if c.frames == nil || len(c.frames) >= maxFrames {
			c.frames = make(map[int64][]byte, maxFrames)
		}
		c.frames[ev.ID] = f
		c.mu.Unlock()
	}
	return f
}

func (s *server) GetDeviceWebhook(ctx context.Context, req api.GetDeviceWebhookRequestObject) (api.GetDeviceWebhookResponseObject, error) {
	if s.events == nil {
		return nil, errNoEvents
	}
	if _, err := s.devices.Get(ctx, req.DeviceID); err != nil {
		return nil, err
	}
	w, found := s.events.DeviceWebhook(req.DeviceID)
	if !found {
		return nil, domain.Errorf(domain.ENOTFOUND, "device %s has no webhook", req.DeviceID)
	}
	return api.GetDeviceWebhook200JSONResponse{Code: 200, Message: ok, Data: toWebhook(w)}, nil
}

func (s *server) PutDeviceWebhook(ctx context.Context, req api.PutDeviceWebhookRequestObject) (api.PutDeviceWebhookResponseObject, error) {
	if s.events == nil {
		return nil, errNoEvents
	}
	if req.Body == nil {
		return nil, invalid("body", "a JSON object with url and secret is required")
	}
	if _, err := s.devices.Get(ctx, req.DeviceID); err != nil {
		return nil, err
	}
	w := domain.Webhook{DeviceID: req.DeviceID, URL: req.Body.URL, Secret: req.Body.Secret}
	if req.Body.Events != nil {
		w.Events = *req.Body.Events
	}
	if err := s.events.SetDeviceWebhook(ctx, w); err != nil {
		return nil, err
	}
	return api.PutDeviceWebhook200JSONResponse{Code: 200, Message: ok, Data: toWebhook(w)}, nil
}

func (s *server) DeleteDeviceWebhook(ctx context.Context, req api.DeleteDeviceWebhookRequestObject) (api.DeleteDeviceWebhookResponseObject, error) {
	if s.events == nil {
		return nil, errNoEvents
	}
	if _, err := s.devices.Get(ctx, req.DeviceID); err != nil {
		return nil, err
	}
	had, err := s.events.DeleteDeviceWebhook(ctx, req.DeviceID)
	if err != nil {
		return nil, err
	}
	if !had {
		return nil, domain.Errorf(domain.ENOTFOUND, "device %s has no webhook", req.DeviceID)
	}
	return api.DeleteDeviceWebhook200JSONResponse{Code: 200, Message: "webhook removed"}, nil
}

func toWebhook(w domain.Webhook) api.Webhook {
	types := []string(w.Events)
	if types == nil {
		types = []string{}
	}
	return api.Webhook{URL: w.URL, Events: types}
}
