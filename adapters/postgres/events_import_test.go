package postgres_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
)

// A storage folder's event log moves into PostgreSQL with its ids, its
// pending deliveries and its webhooks; again, nothing changes; into
// another gateway's log, nothing moves.
func TestImportFromAStorageFolder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src, err := sqlite.OpenEvents(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	at := time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)
	var evs []domain.LiveEvent
	for i := range 5 {
		evs = append(evs, domain.LiveEvent{Type: domain.EventMessageReceived, DeviceID: "x", Time: at.Add(time.Duration(i) * time.Second), Data: []byte(`{"i":1}`)})
	}
	route := func(ev domain.LiveEvent) []string { return []string{"device:x"} }
	if _, err := src.Append(ctx, evs, route); err != nil {
		t.Fatal(err)
	}
	if _, err := src.Prune(ctx, at.Add(time.Second), 0); err != nil { // ids start at 2
		t.Fatal(err)
	}
	pend, _ := src.Pending(ctx, "device:x", nil, 10)
	if err := src.Done(ctx, pend[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := src.Retry(ctx, pend[1].ID, 3, at.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	hook := domain.Webhook{DeviceID: "x", URL: "http://127.0.0.1:1/", Secret: "0123456789abcdef", Events: domain.TypeFilter{"message."}}
	if err := src.PutWebhook(ctx, hook); err != nil {
		t.Fatal(err)
	}

	uri := pgtest.DB(t)
	dst := postgres.NewEvents(open(t, uri, "migrate"))
	n, err := dst.ImportFrom(ctx, src)
	if err != nil || n != (postgres.Imported{Events: 4, Deliveries: 4, Webhooks: 1}) {
		t.Fatalf("ImportFrom = %+v, %v", n, err)
	}
	want, _ := src.Read(ctx, 0, 10)
	got, _ := dst.Read(ctx, 0, 10)
	if len(got) != 4 || got[0].ID != 2 {
		t.Fatalf("imported %+v", got)
	}
	for i := range got {
		if got[i].ID != want[i].ID || got[i].Type != want[i].Type || !got[i].Time.Equal(want[i].Time.Truncate(time.Microsecond)) || string(got[i].Data) != string(want[i].Data) {
			t.Fatalf("event %d: %+v, source %+v", i, got[i], want[i])
		}
	}
	if oldest, last, _ := dst.Bounds(ctx); oldest != 2 || last != 5 {
		t.Fatalf("Bounds = %d, %d; want 2, 5", oldest, last)
	}
	dpend, _ := dst.Pending(ctx, "device:x", nil, 10)
	if len(dpend) != 4 || dpend[0].EventID != 2 || dpend[0].Attempts != 3 || !dpend[0].NextAt.Equal(at.Add(time.Hour).Truncate(time.Microsecond)) || string(dpend[0].Body) != string(pend[1].Body) {
		t.Fatalf("imported outbox %+v", dpend)
	}
	if hooks, _ := dst.ListWebhooks(ctx); len(hooks) != 1 || hooks[0].URL != hook.URL || !slices.Equal(hooks[0].Events, hook.Events) {
		t.Fatalf("imported webhooks %+v", hooks)
	}
	// The next append goes on after the source's ids.
	next, err := dst.Append(ctx, []domain.LiveEvent{{Type: domain.EventDeviceCreated, DeviceID: "y", Time: at}}, nil)
	if err != nil || next[0].ID != 6 {
		t.Fatalf("append after import: %+v, %v", next, err)
	}
	// Again, after the gateways delivered some and a webhook was removed:
	// nothing changes.
	if err := dst.Done(ctx, dpend[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := dst.DeleteWebhook(ctx, "x"); err != nil {
		t.Fatal(err)
	}
	if n, err := dst.ImportFrom(ctx, src); err != nil || n != (postgres.Imported{Again: true}) {
		t.Fatalf("second ImportFrom = %+v, %v", n, err)
	}
	if dpend, _ := dst.Pending(ctx, "device:x", nil, 10); len(dpend) != 3 {
		t.Fatalf("the second import brought back deliveries: %+v", dpend)
	}
	if hooks, _ := dst.ListWebhooks(ctx); len(hooks) != 0 {
		t.Fatalf("the second import brought back %+v", hooks)
	}

	// Another gateway's log: refused, nothing copied.
	other := postgres.NewEvents(open(t, pgtest.DB(t), "other"))
	if _, err := other.Append(ctx, []domain.LiveEvent{{Type: domain.EventDeviceCreated, DeviceID: "z", Time: at}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := other.ImportFrom(ctx, src); domain.ErrorCode(err) != domain.ECONFLICT {
		t.Fatalf("import into another gateway's log: %v, want ECONFLICT", err)
	}
	if hooks, _ := other.ListWebhooks(ctx); len(hooks) != 0 {
		t.Fatalf("a refused import copied %+v", hooks)
	}
}
