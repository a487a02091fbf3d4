package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
	"github.com/gowa-dev/gowa/ports"
)

// sender records deliveries; fail decides each one's fate.
type sender struct {
	mu   sync.Mutex
	got  map[string][]int64 // url → event ids delivered, in order
	fail func(w domain.Webhook, ev domain.LiveEvent) error
	outs map[string]int
}

func (s *sender) Send(ctx context.Context, w domain.Webhook, d domain.Delivery) error {
	var ev domain.LiveEvent
	if err := json.Unmarshal(d.Body, &ev); err != nil || ev.ID != d.EventID {
		return fmt.Errorf("%w: bad body %s", ports.ErrRejected, d.Body)
	}
	s.mu.Lock()
	fail := s.fail
	s.mu.Unlock()
	if fail != nil {
		if err := fail(w, ev); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string][]int64{}
	}
	s.got[w.URL] = append(s.got[w.URL], ev.ID)
	return nil
}

func (s *sender) delivered(url string) []int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.got[url])
}

func (s *sender) setFail(f func(w domain.Webhook, ev domain.LiveEvent) error) {
	s.mu.Lock()
	s.fail = f
	s.mu.Unlock()
}

const secret16 = "0123456789abcdef"

func TestWebhookOrderPerDeviceAndAFailingDeviceHoldsUpNoOther(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	snd := &sender{}
	var mu sync.Mutex
	outcomes := map[string]int{}
	global := domain.Webhook{URL: "http://global.test/", Secret: secret16}
	h, clk := newHub(t, store, func(c *events.Config) {
		c.Sender = snd
		c.Global = []domain.Webhook{global}
		c.OnDelivery = func(_, o string) { mu.Lock(); outcomes[o]++; mu.Unlock() }
	})
	// Device a's deliveries fail as a 503 would, until the fault clears.
	snd.setFail(func(w domain.Webhook, ev domain.LiveEvent) error {
		if ev.DeviceID == "a" {
			return errors.New("webhook answered 503")
		}
		return nil
	})
	for i := range 10 {
		h.Emit("a", domain.EventMessageReceived, nil)
		h.Emit("b", domain.EventMessageReceived, map[string]int{"i": i})
	}
	// b's ten arrive, in order, although a keeps failing.
	waitFor(t, func() bool { return len(snd.delivered(global.URL)) == 10 })
	got := snd.delivered(global.URL)
	for i, id := range got {
		if id != int64(2*i+2) {
			t.Fatalf("delivered %v, want b's events 2, 4, … 20 in order", got)
		}
	}
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return outcomes[events.OutcomeRetry] > 0 })
	snd.setFail(nil)
	// Retries fall due as the clock moves on.
	waitFor(t, func() bool { clk.Add(10 * time.Millisecond); return len(snd.delivered(global.URL)) == 20 })
	var aIDs []int64
	for _, id := range snd.delivered(global.URL) {
		if id%2 == 1 {
			aIDs = append(aIDs, id)
		}
	}
	if !slices.IsSorted(aIDs) || len(aIDs) != 10 {
		t.Fatalf("a's events delivered as %v, want all ten in order", aIDs)
	}
	waitFor(t, func() bool { d, _ := store.Depth(context.Background()); return d["global:"+global.URL].Pending == 0 })
}

func TestWebhookRejectedAndExpiredAreDropped(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	snd := &sender{}
	h, clk := newHub(t, store, func(c *events.Config) {
		c.Sender = snd
		c.MaxDeliveryAge = time.Hour
	})
	hook := domain.Webhook{DeviceID: "a", URL: "http://a.test/", Secret: secret16, Events: domain.TypeFilter{"message."}}
	if err := h.SetDeviceWebhook(context.Background(), hook); err != nil {
		t.Fatal(err)
	}
	snd.setFail(func(w domain.Webhook, ev domain.LiveEvent) error {
		switch ev.ID {
		case 2:
			return fmt.Errorf("%w: 404", ports.ErrRejected)
		case 3:
			clk.Add(2 * time.Hour) // still failing once the event is older than MaxDeliveryAge
			return errors.New("connection refused")
		}
		return nil
	})
	h.Emit("a", domain.EventMessageSent, nil)     // 1: delivered
	h.Emit("a", domain.EventMessageSent, nil)     // 2: rejected, dropped
	h.Emit("a", domain.EventMessageSent, nil)     // 3: expired, dropped
	h.Emit("a", domain.EventDeviceConnected, nil) // 4: not in the webhook's filter
	h.Emit("b", domain.EventMessageSent, nil)     // 5: another device's
	h.Emit("a", domain.EventMessageReceived, nil) // 6: delivered
	waitFor(t, func() bool { return slices.Equal(snd.delivered(hook.URL), []int64{1, 6}) })
	waitFor(t, func() bool { d, _ := store.Depth(context.Background()); return d["device:a"].Pending == 0 })
	if w, ok := h.DeviceWebhook("a"); !ok || w.Secret != "" || w.URL != hook.URL {
		t.Fatalf("DeviceWebhook = %+v, %v; want it without its secret", w, ok)
	}
	if err := h.SetDeviceWebhook(context.Background(), domain.Webhook{DeviceID: "a", URL: "ftp://x", Secret: secret16}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("ftp URL: %v", err)
	}
	if err := h.SetDeviceWebhook(context.Background(), domain.Webhook{DeviceID: "a", URL: "http://x.test", Secret: "short"}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("short secret: %v", err)
	}
	if err := h.SetDeviceWebhook(context.Background(), domain.Webhook{DeviceID: "a", URL: "http://x.test", Secret: secret16, Events: domain.TypeFilter{"nope"}}); domain.ErrorCode(err) != domain.EINVALID {
		t.Fatalf("unknown type: %v", err)
	}
	if had, err := h.DeleteDeviceWebhook(context.Background(), "a"); !had || err != nil {
		t.Fatalf("DeleteDeviceWebhook = %v, %v", had, err)
	}
	if _, ok := h.DeviceWebhook("a"); ok {
		t.Fatal("webhook still there after delete")
	}
}

func TestWebhookOutboxResumesAfterRestart(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	global := domain.Webhook{URL: "http://global.test/", Secret: secret16}
	// First life: the receiver is down; each delivery is tried once and
	// its retry time stored.
	down := &sender{}
	down.setFail(func(domain.Webhook, domain.LiveEvent) error { return errors.New("connection refused") })
	h1, clk := newHub(t, store, func(c *events.Config) {
		c.Sender = down
		c.Global = []domain.Webhook{global}
		c.RetryBase, c.RetryMax = time.Hour, time.Hour
	})
	for range 5 {
		h1.Emit("a", domain.EventMessageReceived, nil)
	}
	waitFor(t, func() bool {
		p, _ := store.Pending(context.Background(), "global:"+global.URL, nil, 10)
		return len(p) == 5 && p[0].Attempts == 1
	})
	if err := h1.Close(); err != nil {
		t.Fatal(err)
	}
	// Second life: the stored retry time is honoured, then all five go
	// out in order.
	up := &sender{}
	readsBefore := store.pendingReads()
	_, clk2 := newHub(t, store, func(c *events.Config) {
		c.Sender = up
		c.Global = []domain.Webhook{global}
		c.Clock = clk
	})
	_ = clk2
	// The dispatcher has read the outbox twice, so an early delivery would
	// have gone out by now.
	waitFor(t, func() bool { return store.pendingReads() >= readsBefore+2 })
	if got := up.delivered(global.URL); len(got) != 0 {
		t.Fatalf("delivered %v before the stored retry time", got)
	}
	clk.Add(time.Hour)
	waitFor(t, func() bool { return len(up.delivered(global.URL)) == 5 })
	if got := up.delivered(global.URL); !slices.Equal(got, []int64{1, 2, 3, 4, 5}) {
		t.Fatalf("delivered %v after restart", got)
	}
}

func TestDeletedDeviceWebhookDeliversItsLastEventsThenGoes(t *testing.T) {
	t.Parallel()
	store := newMemStore()
	snd := &sender{}
	h, _ := newHub(t, store, func(c *events.Config) { c.Sender = snd })
	hook := domain.Webhook{DeviceID: "a", URL: "http://a.test/", Secret: secret16}
	if err := h.SetDeviceWebhook(context.Background(), hook); err != nil {
		t.Fatal(err)
	}
	h.Emit("a", domain.EventDeviceCreated, nil)
	h.Emit("a", domain.EventDeviceDeleted, nil)
	h.Emit("a", domain.EventDeviceCreated, nil) // the same id, created again: no webhook
	waitFor(t, func() bool { return slices.Equal(snd.delivered(hook.URL), []int64{1, 2}) })
	waitFor(t, func() bool { l, _ := store.ListWebhooks(context.Background()); return len(l) == 0 })
	if _, ok := h.DeviceWebhook("a"); ok {
		t.Error("the deleted device's webhook is still listed")
	}
	// A new webhook for the new device gets only what comes next.
	hook2 := domain.Webhook{DeviceID: "a", URL: "http://a2.test/", Secret: secret16}
	if err := h.SetDeviceWebhook(context.Background(), hook2); err != nil {
		t.Fatal(err)
	}
	h.Emit("a", domain.EventDevicePairing, nil)
	waitFor(t, func() bool { return slices.Equal(snd.delivered(hook2.URL), []int64{4}) })
	if got := snd.delivered(hook.URL); !slices.Equal(got, []int64{1, 2}) {
		t.Errorf("old webhook got %v", got)
	}
}

func TestSlowDeviceHoldsUpNoOtherDeviceOfTheEndpoint(t *testing.T) {
	t.Parallel()
	release, started := make(chan struct{}), make(chan struct{})
	snd := &sender{}
	snd.setFail(func(w domain.Webhook, ev domain.LiveEvent) error {
		if ev.DeviceID == "slow" {
			close(started)
			<-release // a receiver that takes its time for this device
		}
		return nil
	})
	global := domain.Webhook{URL: "http://global.test/", Secret: secret16}
	h, _ := newHub(t, newMemStore(), func(c *events.Config) {
		c.Sender = snd
		c.Global = []domain.Webhook{global}
	})
	h.Emit("slow", domain.EventMessageReceived, nil)
	<-started
	for range 10 {
		h.Emit("fast", domain.EventMessageReceived, nil)
	}
	// The fast device's ten arrive while the slow one's first still hangs.
	waitFor(t, func() bool { return len(snd.delivered(global.URL)) == 10 })
	close(release)
	waitFor(t, func() bool { return len(snd.delivered(global.URL)) == 11 })
}
