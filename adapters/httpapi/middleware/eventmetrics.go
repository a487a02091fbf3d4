package middleware

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gowa-dev/gowa/ports"
)

// EventSource is what the live-event metrics read at scrape time.
type EventSource interface {
	Subscribers() int
	OutboxDepth(ctx context.Context) (map[string]ports.OutboxDepth, error)
}

// WatchEvents adds the live-event metrics:
//
//   - gowa_events_total{type}: events written to the log, via EventObserved;
//   - gowa_webhook_deliveries_total{endpoint,outcome}: delivery attempts by
//     outcome (delivered, retry, rejected, expired), via DeliveryObserved;
//   - gowa_webhook_outbox_depth{endpoint} and
//     gowa_webhook_outbox_oldest_seconds{endpoint}: the backlog and the age
//     of its oldest undelivered event, read at scrape time;
//   - gowa_event_stream_subscribers: open event streams.
//
// now gives the ages. Call it once, before the first scrape.
func (m *Metrics) WatchEvents(src EventSource, now func() time.Time) {
	m.events = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gowa_events_total",
		Help: "Live events written to the event log, by type.",
	}, []string{"type"})
	m.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gowa_webhook_deliveries_total",
		Help: "Webhook delivery attempts by endpoint and outcome (delivered, retry, rejected, expired).",
	}, []string{"endpoint", "outcome"})
	m.reg.MustRegister(m.events, m.deliveries, eventsCollector{
		src:         src,
		now:         now,
		depth:       prometheus.NewDesc("gowa_webhook_outbox_depth", "Webhook deliveries waiting, by endpoint.", []string{"endpoint"}, nil),
		oldest:      prometheus.NewDesc("gowa_webhook_outbox_oldest_seconds", "Age of the oldest undelivered event, by endpoint; 0 when none waits.", []string{"endpoint"}, nil),
		subscribers: prometheus.NewDesc("gowa_event_stream_subscribers", "Open event streams.", nil, nil),
	})
}

// EventObserved counts one event written to the log.
func (m *Metrics) EventObserved(typ string) {
	if m.events != nil {
		m.events.WithLabelValues(typ).Inc()
	}
}

// DeliveryObserved counts one webhook delivery attempt.
func (m *Metrics) DeliveryObserved(endpoint, outcome string) {
	if m.deliveries != nil {
		m.deliveries.WithLabelValues(endpoint, outcome).Inc()
	}
}

type eventsCollector struct {
	src                        EventSource
	now                        func() time.Time
	depth, oldest, subscribers *prometheus.Desc
}

func (c eventsCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.oldest
	ch <- c.subscribers
}

func (c eventsCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(c.subscribers, prometheus.GaugeValue, float64(c.src.Subscribers()))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	depth, err := c.src.OutboxDepth(ctx)
	if err != nil {
		return
	}
	for ep, d := range depth {
		age := 0.0
		if d.Pending > 0 {
			age = max(c.now().Sub(d.Oldest).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(d.Pending), ep)
		ch <- prometheus.MustNewConstMetric(c.oldest, prometheus.GaugeValue, age, ep)
	}
}
