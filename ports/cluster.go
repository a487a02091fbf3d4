package ports

import (
	"context"
	"errors"
	"time"
)

// Leases records which replica owns each device, when several gateways
// share one database. Every device (slot) that is in use is leased to
// exactly one replica: only the holder runs it (pairs, connects, sends,
// logs out). A lease has an expiry, kept by the database's clock; the
// holder renews all of its leases at once, well before they lapse, and
// stops its devices when it cannot. Each acquisition gets a new fencing
// token. The store refuses session writes of a replica that no longer holds
// the device's lease (see adapters/postgres), so that a replica paused past
// its lease cannot corrupt a session another replica now runs.
//
// Implementations are bound to one replica (the holder named when they
// were opened): every method acts as that replica.
type Leases interface {
	// Self is this replica's id.
	Self() string
	// Heartbeat records that this replica is alive until ttl from now and
	// reachable at addr (its --advertise-url), joining if needed.
	Heartbeat(ctx context.Context, addr string, ttl time.Duration) error
	// Leave removes this replica from the live ones (after its handoff).
	Leave(ctx context.Context) error
	// Replicas lists the replicas whose heartbeat has not expired, this one
	// included when it has one, ordered by id.
	Replicas(ctx context.Context) ([]Replica, error)

	// Acquire takes the lease of deviceID for ttl when nobody holds it or
	// its holder's lease has expired (or renews it when this replica holds
	// it). It returns the lease as it now stands and whether this replica
	// holds it.
	Acquire(ctx context.Context, deviceID string, ttl time.Duration) (Lease, bool, error)
	// Renew extends every lease this replica holds to ttl from now, and
	// returns the ids of the devices it still holds (those another replica
	// took after they lapsed are not among them).
	Renew(ctx context.Context, ttl time.Duration) ([]string, error)
	// Release gives up this replica's leases of the devices named; a lease
	// it does not hold is left alone.
	Release(ctx context.Context, deviceIDs ...string) error
	// Owner returns deviceID's lease, and whether it is live (held and not
	// expired).
	Owner(ctx context.Context, deviceID string) (Lease, bool, error)
	// Leases lists every live lease.
	Leases(ctx context.Context) ([]Lease, error)
	// Unowned lists the registered devices whose lease is free or expired,
	// ordered by id.
	Unowned(ctx context.Context) ([]string, error)
}

// WebhooksLease is the pseudo-device whose lease makes its holder the one
// replica that delivers webhooks, so that deliveries keep their order. It
// is no valid device id, so no slot can take it; Unowned lists it while
// nobody holds it.
const WebhooksLease = "~webhooks"

// Lease is one device's lease.
type Lease struct {
	DeviceID string
	Holder   string    // the replica's id; "" when released
	Addr     string    // the holder's advertised URL
	Token    int64     // the fencing token: grows at every acquisition
	Expires  time.Time // by the database's clock
}

// Replica is one live gateway process.
type Replica struct {
	ID      string
	Addr    string // its --advertise-url
	Expires time.Time
}

// ErrStoreUnavailable marks a failure to reach the shared database, as
// opposed to a refusal: callers treat it as "try again", and a replica that
// sees it for too long stops its devices.
var ErrStoreUnavailable = errors.New("the shared database is unreachable")
