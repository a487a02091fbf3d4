package ports

import (
	"context"
	"errors"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// Events is told what devices do. The device service calls Emit at each of
// its transitions; Emit never blocks on I/O, so it may be called under the
// device's locks: the event is queued, written to the event log, and only
// then told to the stream and the webhooks. data is the type's payload
// (one of the domain.*EventData types).
type Events interface {
	Emit(deviceID string, typ domain.EventType, data any)
	// Sync returns once every event emitted before the call is written to
	// the log, so that an answer that follows events never precedes them
	// on disk.
	Sync(ctx context.Context) error
}

// EventLog is the durable log every live event is written to before anyone
// is told, and the webhook outbox filled in the same write.
type EventLog interface {
	// Append stores evs in order, giving each the next id (ids are never
	// reused, even after pruning), and in the same transaction queues a
	// delivery of each event to every endpoint route names for it. It
	// returns the events with their ids.
	Append(ctx context.Context, evs []domain.LiveEvent, route func(domain.LiveEvent) []string) ([]domain.LiveEvent, error)
	// Read returns up to limit events with ids above after, oldest first.
	Read(ctx context.Context, after int64, limit int) ([]domain.LiveEvent, error)
	// Bounds returns the id of the oldest event kept (0 when none is) and
	// the last id ever given (0 when none was).
	Bounds(ctx context.Context) (oldest, last int64, err error)
	// Prune drops events older than before, and the oldest beyond the
	// newest keep, returning how many it dropped. Outbox entries are not
	// pruned: they carry their own copy of the event.
	Prune(ctx context.Context, before time.Time, keep int) (int64, error)
}

// Outbox holds the deliveries waiting for each webhook endpoint.
type Outbox interface {
	// Pending returns up to limit deliveries waiting for endpoint, oldest
	// first, leaving out those of the devices in skip (whose earliest
	// delivery is waiting for a retry, so that their later ones must wait
	// too).
	Pending(ctx context.Context, endpoint string, skip []string, limit int) ([]domain.Delivery, error)
	// Done removes deliveries that were delivered or given up.
	Done(ctx context.Context, ids ...int64) error
	// Retry records a failed attempt and when to try again.
	Retry(ctx context.Context, id int64, attempts int, next time.Time) error
	// Depth returns, per endpoint, how many deliveries are pending and when
	// the oldest was queued.
	Depth(ctx context.Context) (map[string]OutboxDepth, error)
	// DropEndpoint removes every delivery pending for endpoint.
	DropEndpoint(ctx context.Context, endpoint string) error
}

// OutboxDepth is one endpoint's backlog.
type OutboxDepth struct {
	Pending int
	Oldest  time.Time
}

// Webhooks keeps the devices' own webhooks.
type Webhooks interface {
	// PutWebhook creates or replaces the webhook of w.DeviceID.
	PutWebhook(ctx context.Context, w domain.Webhook) error
	// DeleteWebhook removes a device's webhook; a missing one is not an
	// error.
	DeleteWebhook(ctx context.Context, deviceID string) error
	// ListWebhooks returns every device's webhook.
	ListWebhooks(ctx context.Context) ([]domain.Webhook, error)
}

// WebhookSender posts one delivery to a webhook, signed with its secret.
type WebhookSender interface {
	// Send posts d.Body to w.URL. It returns nil when the receiver took it
	// (2xx), an error wrapping ErrRejected when it refused it for good
	// (3xx, 4xx other than 408 and 429), and any other error for faults
	// worth retrying (network errors, timeouts, 408, 429, 5xx).
	Send(ctx context.Context, w domain.Webhook, d domain.Delivery) error
}

// ErrRejected marks a delivery the receiver refused for good.
var ErrRejected = errors.New("the receiver rejected the delivery")
