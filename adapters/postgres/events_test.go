package postgres_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports/portstest"
)

func TestEventStoreContract(t *testing.T) {
	t.Parallel()
	uris := map[portstest.EventStore]string{}
	openOn := func(t *testing.T, uri string) portstest.EventStore {
		e := postgres.NewEvents(open(t, uri, "a"))
		uris[e] = uri
		return e
	}
	portstest.EventStoreSuite(t,
		func(t *testing.T) portstest.EventStore { return openOn(t, pgtest.DB(t)) },
		// Another replica's pool on the same database.
		func(t *testing.T, s portstest.EventStore) portstest.EventStore { return openOn(t, uris[s]) })
}

// Appends from several replicas at once commit in id order: a reader
// following the log by id, as every replica's event service does, sees
// every event exactly once and never an id below one it already read.
func TestAppendsFromReplicasCommitInOrder(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	const replicas, batches, size = 3, 20, 3
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range replicas {
		e := postgres.NewEvents(open(t, uri, fmt.Sprint("r", r)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range batches {
				evs := make([]domain.LiveEvent, size)
				for i := range evs {
					evs[i] = domain.LiveEvent{Type: domain.EventMessageSent, DeviceID: fmt.Sprint("d", r), Time: time.Now()}
				}
				if _, err := e.Append(ctx, evs, func(domain.LiveEvent) []string { return []string{"global"} }); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()
	reader := postgres.NewEvents(open(t, uri, "reader"))
	var seen []int64
	for done := false; !done; {
		select {
		case <-stop:
			done = true // one more read after the last commit
		default:
		}
		for {
			after := int64(0)
			if len(seen) > 0 {
				after = seen[len(seen)-1]
			}
			evs, err := reader.Read(ctx, after, 50)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) == 0 {
				break
			}
			for _, ev := range evs {
				seen = append(seen, ev.ID)
			}
		}
	}
	if len(seen) != replicas*batches*size {
		t.Fatalf("the reader saw %d events, want %d (an id committed below one already read was missed)", len(seen), replicas*batches*size)
	}
	for i, id := range seen {
		if id != int64(i+1) {
			t.Fatalf("event %d has id %d: ids are not contiguous", i, id)
		}
	}
	pend, err := reader.Pending(ctx, "global", nil, 1000)
	if err != nil || len(pend) != len(seen) {
		t.Fatalf("outbox holds %d deliveries, %v; want %d", len(pend), err, len(seen))
	}
	for i := 1; i < len(pend); i++ {
		if pend[i].EventID <= pend[i-1].EventID {
			t.Fatalf("outbox order: event %d after %d", pend[i].EventID, pend[i-1].EventID)
		}
	}
}

// Watch wakes a replica when another one appends or changes a webhook,
// and comes back on its own after PostgreSQL restarts.
func TestWatchWakesOnOtherReplicasChangesAndReconnects(t *testing.T) {
	t.Parallel()
	c := pgtest.New(t)
	uri := c.NewDB(t)
	a := postgres.NewEvents(open(t, uri, "a"))
	b := postgres.NewEvents(open(t, uri, "b"))
	b.Backoff = 100 * time.Millisecond
	b.Ping = 20 * time.Millisecond // silent spells are checked, not mistaken for a cut
	var logs syncBuffer
	b.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithCancel(context.Background())
	appended, hooks := b.Watch(ctx)
	wait := func(ch <-chan struct{}, what string) {
		t.Helper()
		select {
		case _, ok := <-ch:
			if !ok {
				t.Fatalf("%s: the channel closed", what)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("no wake-up for %s", what)
		}
	}
	// Connected: one wake-up each, for whatever happened before.
	wait(appended, "the first connection")
	wait(hooks, "the first connection")
	ev := domain.LiveEvent{Type: domain.EventDeviceCreated, DeviceID: "x", Time: time.Now()}
	if _, err := a.Append(context.Background(), []domain.LiveEvent{ev}, nil); err != nil {
		t.Fatal(err)
	}
	wait(appended, "an append")
	if err := a.PutWebhook(context.Background(), domain.Webhook{DeviceID: "x", URL: "http://127.0.0.1:1/", Secret: "0123456789abcdef"}); err != nil {
		t.Fatal(err)
	}
	wait(hooks, "a webhook change")
	if strings.Contains(logs.String(), "reconnecting") {
		t.Fatalf("Watch reconnected while the server was up: %s", logs.String())
	}

	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	wait(appended, "the reconnection")
	// The other replica's pool may hold dead connections for a moment.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := a.Append(context.Background(), []domain.LiveEvent{ev}, nil)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
	}
	wait(appended, "an append after the restart")
	cancel()
	for range appended { // closed once Watch has stopped
	}
	for range hooks {
	}
}

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// An append that fails halfway leaves nothing behind: no event, no id
// given away, and no connection stuck in the failed transaction.
func TestFailedAppendLeavesNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := open(t, pgtest.DB(t), "a")
	e := postgres.NewEvents(db)
	good := domain.LiveEvent{Type: domain.EventDeviceCreated, DeviceID: "x", Time: time.Now()}
	bad := good
	bad.Data = []byte(`{not json`)
	for range 20 { // more than the pool holds connections
		if _, err := e.Append(ctx, []domain.LiveEvent{good, bad}, nil); err == nil {
			t.Fatal("an event with invalid JSON data was appended")
		}
	}
	oldest, last, err := e.Bounds(ctx)
	if err != nil || oldest != 0 || last != 0 {
		t.Fatalf("after failed appends: Bounds = %d, %d, %v; want nothing", oldest, last, err)
	}
	got, err := e.Append(ctx, []domain.LiveEvent{good}, nil)
	if err != nil || got[0].ID != 1 {
		t.Fatalf("the next append: %+v, %v; want id 1", got, err)
	}
	var idle int32
	for _, c := range db.Pool.AcquireAllIdle(ctx) {
		if c.Conn().PgConn().TxStatus() != 'I' {
			t.Errorf("a pooled connection is in transaction state %c", c.Conn().PgConn().TxStatus())
		}
		idle++
		c.Release()
	}
	if idle == 0 {
		t.Error("no idle connection to look at")
	}
}
