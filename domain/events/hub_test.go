package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestMemStoreContract(t *testing.T) {
	t.Parallel()
	portstest.EventStoreSuite(t, func(*testing.T) portstest.EventStore { return newMemStore() }, nil)
}

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newHub(t *testing.T, store *memStore, tweak func(*events.Config)) (*events.Hub, *clock) {
	t.Helper()
	clk := &clock{now: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)}
	cfg := events.Config{Store: store, Clock: clk, PruneEvery: time.Hour, RetryBase: time.Millisecond, RetryMax: 4 * time.Millisecond, RetryPoll: time.Millisecond, Rand: func() float64 { return 0.5 }}
	if tweak != nil {
		tweak(&cfg)
	}
	if c, ok := cfg.Clock.(*clock); ok {
		clk = c
	}
	h := events.New(cfg)
	if err := h.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h, clk
}

func next(t *testing.T, s *events.Subscription) domain.LiveEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func TestEventsAreWrittenBeforeTheyAreTold(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	h, _ := newHub(t, store, nil)
	sub, err := h.Subscribe(context.Background(), events.Filter{}, 0, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	h.Emit("a", domain.EventDeviceCreated, nil)
	h.Emit("a", domain.EventDevicePairing, domain.PairingEventData{Method: domain.PairingQR})
	first, second := next(t, sub), next(t, sub)
	if first.Type != domain.EventDeviceCreated || second.Type != domain.EventDevicePairing || second.ID <= first.ID {
		t.Fatalf("got %+v then %+v", first, second)
	}
	logged, _ := store.Read(context.Background(), 0, 10)
	if len(logged) != 2 || logged[1].ID != second.ID {
		t.Fatalf("the log holds %+v when the subscriber was told %d", logged, second.ID)
	}
	var data domain.PairingEventData
	if err := json.Unmarshal(second.Data, &data); err != nil || data.Method != domain.PairingQR {
		t.Fatalf("data %s: %v", second.Data, err)
	}
}

func TestResumeMissesNothingWhileEventsFlow(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	h, _ := newHub(t, store, nil)
	for i := range 300 {
		h.Emit(fmt.Sprint("d", i%3), domain.EventMessageSent, nil)
	}
	// Resume from the middle while more are emitted: the catch-up from the
	// log and the live part must join without a hole or a repeat.
	waitFor(t, func() bool { _, last, _ := store.Bounds(context.Background()); return last == 300 })
	sub, err := h.Subscribe(context.Background(), events.Filter{}, 100, true)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	go func() {
		for range 300 {
			h.Emit("d0", domain.EventMessageSent, nil)
		}
	}()
	for want := int64(101); want <= 600; want++ {
		if ev := next(t, sub); ev.ID != want {
			t.Fatalf("got id %d, want %d", ev.ID, want)
		}
	}
}

func TestFilterByDeviceAndTypePrefix(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, newMemStore(), nil)
	sub, err := h.Subscribe(context.Background(), events.Filter{Devices: []string{"a"}, Types: domain.TypeFilter{"device."}}, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	h.Emit("b", domain.EventDeviceCreated, nil)
	h.Emit("a", domain.EventMessageSent, nil)
	h.Emit("a", domain.EventDeviceConnected, nil)
	if ev := next(t, sub); ev.DeviceID != "a" || ev.Type != domain.EventDeviceConnected {
		t.Fatalf("got %+v", ev)
	}
}

func TestResumeFromPrunedIDStartsWithGap(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	h, clk := newHub(t, store, func(c *events.Config) { c.Retention = time.Hour })
	for range 3 {
		h.Emit("a", domain.EventMessageSent, nil)
	}
	waitFor(t, func() bool { _, last, _ := store.Bounds(context.Background()); return last == 3 })
	clk.Add(2 * time.Hour)
	h.Emit("a", domain.EventMessageReceived, nil)
	waitFor(t, func() bool { _, last, _ := store.Bounds(context.Background()); return last == 4 })
	h.Prune(context.Background())

	sub, err := h.Subscribe(context.Background(), events.Filter{}, 1, true)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	gap := next(t, sub)
	var data domain.GapEventData
	_ = json.Unmarshal(gap.Data, &data)
	if gap.Type != domain.EventStreamGap || data.LastEventID != 1 || data.Next != 4 || gap.ID != 3 {
		t.Fatalf("first event %+v (%s), want stream.gap 1 → 4 with id 3", gap, gap.Data)
	}
	if ev := next(t, sub); ev.ID != 4 {
		t.Fatalf("after the gap got %+v, want id 4", ev)
	}
	// An id this gateway never gave (its storage was reset) is a gap too.
	sub2, _ := h.Subscribe(context.Background(), events.Filter{}, 99, true)
	defer sub2.Close()
	if ev := next(t, sub2); ev.Type != domain.EventStreamGap {
		t.Fatalf("unknown id: got %+v, want stream.gap", ev)
	}
	if ev := next(t, sub2); ev.ID != 4 {
		t.Fatalf("unknown id: then %+v, want id 4", ev)
	}
	page, after, err := h.Page(context.Background(), events.Filter{}, 1, 10)
	if err != nil || len(page) != 2 || page[0].Type != domain.EventStreamGap || page[1].ID != 4 || after != 4 {
		t.Fatalf("Page = %+v, %d, %v", page, after, err)
	}
}

func TestSlowReaderIsCutOffAndOthersGoOn(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, newMemStore(), func(c *events.Config) { c.SubscriberBuffer = 4 })
	slow, _ := h.Subscribe(context.Background(), events.Filter{}, 0, false)
	defer slow.Close()
	fast, _ := h.Subscribe(context.Background(), events.Filter{}, 0, false)
	defer fast.Close()
	for i := range 20 {
		h.Emit("a", domain.EventMessageSent, nil)
		if ev := next(t, fast); ev.ID != int64(i+1) {
			t.Fatalf("fast reader got %d, want %d", ev.ID, i+1)
		}
	}
	var last int64
	for {
		ev, err := slow.Next(context.Background())
		if errors.Is(err, events.ErrLagged) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		last = ev.ID
	}
	if last != 4 {
		t.Fatalf("the slow reader got up to %d before being cut off, want its buffer of 4", last)
	}
	// It resumes by id and misses nothing.
	again, _ := h.Subscribe(context.Background(), events.Filter{}, last, true)
	defer again.Close()
	if ev := next(t, again); ev.ID != 5 {
		t.Fatalf("resumed at %d, want 5", ev.ID)
	}
}

func TestCloseWritesWhatWasEmitted(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	store.failNext = 2 // the first writes fail and are retried
	h, _ := newHub(t, store, nil)
	for range 10 {
		h.Emit("a", domain.EventMessageSent, nil)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if evs, _ := store.Read(context.Background(), 0, 100); len(evs) != 10 {
		t.Fatalf("%d events written by Close, want 10", len(evs))
	}
}

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(time.Millisecond)
	}
}
