// Package portstest holds the contract tests every implementation of a port
// runs, so that an in-memory fake cannot lie to the domain tests.
package portstest

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// EventStore is an event log, its outbox and the webhook store, which one
// database holds so that events and their deliveries are written together.
type EventStore interface {
	ports.EventLog
	ports.Outbox
	ports.Webhooks
}

// EventStoreSuite runs the contract of EventStore against fresh stores made
// by open. reopen, when not nil, returns the store of the same database
// after closing the first (for implementations that persist).
func EventStoreSuite(t *testing.T, open func(t *testing.T) EventStore, reopen func(t *testing.T, s EventStore) EventStore) {
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	ev := func(dev string, typ domain.EventType, i int) domain.LiveEvent {
		return domain.LiveEvent{Type: typ, DeviceID: dev, Time: base.Add(time.Duration(i) * time.Minute), Data: json.RawMessage(`{"n":` + string(rune('0'+i%10)) + `}`)}
	}

	t.Run("AppendAssignsIncreasingIDs", func(t *testing.T) {
		s := open(t)
		got, err := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventDeviceCreated, 0), ev("b", domain.EventDeviceCreated, 1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		more, err := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventDevicePairing, 2)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, more...)
		for i := 1; i < len(got); i++ {
			if got[i].ID <= got[i-1].ID {
				t.Fatalf("ids not increasing: %d then %d", got[i-1].ID, got[i].ID)
			}
		}
		read, err := s.Read(ctx, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(read) != 3 || read[0].ID != got[0].ID || read[2].Type != domain.EventDevicePairing || read[1].DeviceID != "b" {
			t.Fatalf("read %+v, want what was appended", read)
		}
		if !read[2].Time.Equal(got[2].Time) || string(read[2].Data) != string(got[2].Data) {
			t.Fatalf("read %+v, appended %+v", read[2], got[2])
		}
		page, err := s.Read(ctx, got[0].ID, 1)
		if err != nil || len(page) != 1 || page[0].ID != got[1].ID {
			t.Fatalf("Read(after first, 1) = %+v, %v", page, err)
		}
	})

	t.Run("PruneKeepsIDsIncreasing", func(t *testing.T) {
		s := open(t)
		var evs []domain.LiveEvent
		for i := range 6 {
			evs = append(evs, ev("a", domain.EventMessageSent, i))
		}
		got, err := s.Append(ctx, evs, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Older than minute 2 by time, then keep the newest 3 by count.
		n, err := s.Prune(ctx, base.Add(2*time.Minute), 3)
		if err != nil || n != 3 {
			t.Fatalf("Prune = %d, %v; want 3 dropped", n, err)
		}
		oldest, last, err := s.Bounds(ctx)
		if err != nil || oldest != got[3].ID || last != got[5].ID {
			t.Fatalf("Bounds = %d, %d, %v; want %d, %d", oldest, last, err, got[3].ID, got[5].ID)
		}
		if n, err := s.Prune(ctx, base.Add(time.Hour), 0); err != nil || n != 3 {
			t.Fatalf("Prune all by time = %d, %v", n, err)
		}
		oldest, last, _ = s.Bounds(ctx)
		if oldest != 0 || last != got[5].ID {
			t.Fatalf("empty log Bounds = %d, %d; want 0, %d", oldest, last, got[5].ID)
		}
		next, err := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventMessageSent, 9)}, nil)
		if err != nil || next[0].ID <= got[5].ID {
			t.Fatalf("id after pruning everything = %+v, %v; want above %d", next, err, got[5].ID)
		}
	})

	t.Run("OutboxFilledWithEvents", func(t *testing.T) {
		s := open(t)
		route := func(e domain.LiveEvent) []string {
			if e.DeviceID == "b" {
				return []string{"global", "device:b"}
			}
			return []string{"global"}
		}
		got, err := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventDeviceCreated, 0), ev("b", domain.EventDeviceCreated, 1), ev("a", domain.EventDeviceDeleted, 2)}, route)
		if err != nil {
			t.Fatal(err)
		}
		pend, err := s.Pending(ctx, "global", nil, 10)
		if err != nil || len(pend) != 3 {
			t.Fatalf("Pending(global) = %+v, %v", pend, err)
		}
		for i, d := range pend {
			if d.EventID != got[i].ID || d.DeviceID != got[i].DeviceID || d.Type != got[i].Type || d.Attempts != 0 {
				t.Fatalf("delivery %d = %+v for event %+v", i, d, got[i])
			}
			var body domain.LiveEvent
			if err := json.Unmarshal(d.Body, &body); err != nil || body.ID != got[i].ID || body.Type != got[i].Type {
				t.Fatalf("delivery body %s: %v", d.Body, err)
			}
		}
		skipA, _ := s.Pending(ctx, "global", []string{"a"}, 10)
		if len(skipA) != 1 || skipA[0].DeviceID != "b" {
			t.Fatalf("Pending skipping a = %+v", skipA)
		}
		// The outbox keeps its copy when the log is pruned.
		if _, err := s.Prune(ctx, base.Add(time.Hour), 0); err != nil {
			t.Fatal(err)
		}
		next := base.Add(time.Hour)
		if err := s.Retry(ctx, pend[0].ID, 1, next); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx, pend[1].ID); err != nil {
			t.Fatal(err)
		}
		if err := s.Done(ctx); err != nil {
			t.Fatal(err)
		}
		pend, _ = s.Pending(ctx, "global", nil, 10)
		if len(pend) != 2 || pend[0].Attempts != 1 || !pend[0].NextAt.Equal(next) || pend[1].EventID != got[2].ID {
			t.Fatalf("after retry and done: %+v", pend)
		}
		depth, err := s.Depth(ctx)
		if err != nil || depth["global"].Pending != 2 || depth["device:b"].Pending != 1 || !depth["global"].Oldest.Equal(base) {
			t.Fatalf("Depth = %+v, %v", depth, err)
		}
		if err := s.DropEndpoint(ctx, "device:b"); err != nil {
			t.Fatal(err)
		}
		if pend, _ := s.Pending(ctx, "device:b", nil, 10); len(pend) != 0 {
			t.Fatalf("dropped endpoint still has %+v", pend)
		}
	})

	t.Run("Webhooks", func(t *testing.T) {
		s := open(t)
		w := domain.Webhook{DeviceID: "a", URL: "http://127.0.0.1:1/hook", Secret: "0123456789abcdef", Events: domain.TypeFilter{"device."}}
		if err := s.PutWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
		w.URL = "https://example.test/h"
		if err := s.PutWebhook(ctx, w); err != nil {
			t.Fatal(err)
		}
		if err := s.PutWebhook(ctx, domain.Webhook{DeviceID: "b", URL: "http://x.test/", Secret: "fedcba9876543210"}); err != nil {
			t.Fatal(err)
		}
		list, err := s.ListWebhooks(ctx)
		if err != nil || len(list) != 2 || list[0].URL != w.URL || !slices.Equal(list[0].Events, w.Events) || list[1].Secret != "fedcba9876543210" || len(list[1].Events) != 0 {
			t.Fatalf("ListWebhooks = %+v, %v", list, err)
		}
		if err := s.DeleteWebhook(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		if err := s.DeleteWebhook(ctx, "missing"); err != nil {
			t.Fatal(err)
		}
		if list, _ := s.ListWebhooks(ctx); len(list) != 1 || list[0].DeviceID != "b" {
			t.Fatalf("after delete: %+v", list)
		}
	})

	if reopen == nil {
		return
	}
	t.Run("SurvivesReopen", func(t *testing.T) {
		s := open(t)
		got, err := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventDeviceCreated, 0)}, func(domain.LiveEvent) []string { return []string{"global"} })
		if err != nil {
			t.Fatal(err)
		}
		s = reopen(t, s)
		read, _ := s.Read(ctx, 0, 10)
		pend, _ := s.Pending(ctx, "global", nil, 10)
		if len(read) != 1 || read[0].ID != got[0].ID || len(pend) != 1 {
			t.Fatalf("after reopen: events %+v, outbox %+v", read, pend)
		}
		more, _ := s.Append(ctx, []domain.LiveEvent{ev("a", domain.EventDeviceDeleted, 1)}, nil)
		if more[0].ID <= got[0].ID {
			t.Fatalf("id after reopen %d, not above %d", more[0].ID, got[0].ID)
		}
	})
}
