package postgres_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/domain"
)

// BenchmarkAppend measures appends of one event (with one outbox entry) and
// of a batch of 64, from one replica and from three at once: the append
// lock serializes them across replicas.
func BenchmarkAppend(b *testing.B) {
	route := func(domain.LiveEvent) []string { return []string{"global:http://x.test/"} }
	for _, replicas := range []int{1, 3} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("replicas=%d/batch=%d", replicas, batch), func(b *testing.B) {
				uri := pgtest.DB(b)
				stores := make([]*postgres.Events, replicas)
				for i := range stores {
					db, err := postgres.Open(context.Background(), uri, postgres.Options{Holder: fmt.Sprint("r", i)})
					if err != nil {
						b.Fatal(err)
					}
					b.Cleanup(db.Close)
					stores[i] = postgres.NewEvents(db)
				}
				evs := make([]domain.LiveEvent, batch)
				for i := range evs {
					evs[i] = domain.LiveEvent{Type: domain.EventMessageSent, DeviceID: "d", Time: time.Now(), Data: []byte(`{"id":"3EB0ABCDEF","chat":"628123@s.whatsapp.net"}`)}
				}
				b.SetParallelism(replicas) // goroutines per GOMAXPROCS; each takes a store in turn
				next := make(chan *postgres.Events, 64)
				go func() {
					for i := 0; ; i++ {
						select {
						case next <- stores[i%replicas]:
						case <-b.Context().Done():
							return
						}
					}
				}()
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					s := <-next
					for pb.Next() {
						if _, err := s.Append(context.Background(), evs, route); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "events/s")
			})
		}
	}
}
