package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/cluster"
	"github.com/gowa-dev/gowa/domain/device"
	"github.com/gowa-dev/gowa/domain/events"
	"github.com/gowa-dev/gowa/ports"
)

// DefaultLeaseTTL is how long a device's lease lasts unrenewed when
// ClusterConfig.LeaseTTL is 0.
const DefaultLeaseTTL = 15 * time.Second

// drainLinger is how long a replica that handed its devices over at
// shutdown keeps answering before it closes its listener: calls that other
// replicas routed here just before the handoff are then refused as
// retryable rather than cut off. At 200 calls/s on a loaded 2-core
// machine, such a call waited up to 270 ms to be accepted.
const drainLinger = time.Second

// placementChannel is the NOTIFY channel that wakes every replica's
// placement: a replica joined, left or handed devices off.
const placementChannel = "gowa_placement"

// clusterCore is what PostgreSQL mode adds to the core: the pool, the
// coordinator that runs this replica's share of the devices, and the
// status table's writer.
type clusterCore struct {
	db       *postgres.DB
	leaseDB  *postgres.DB // the leases' own pool
	coord    *cluster.Coordinator
	statuses *postgres.Statuses
	writer   *postgres.StatusWriter
	// key signs the requests this replica forwards to another.
	key []byte

	cancel context.CancelFunc // the coordinator and the wake-ups
	wg     sync.WaitGroup
	// The status writer outlives the devices, so that their last
	// transitions are written.
	stopWriter context.CancelFunc
	writerDone chan struct{}
}

// NewReplicaID returns a new replica id, "<hostname>-<8 hex>": new at every
// start, so that a restarted process never mistakes its predecessor's
// leases for its own.
func NewReplicaID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "gowa"
	}
	// A replica id is a setting value on every connection and a word in
	// the forwarding mark: keep it to a plain word.
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '-'
	}, host)
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return host + "-" + hex.EncodeToString(b)
}

// openCluster opens the stores in PostgreSQL, the event service on the
// shared log, the device service in cluster mode and its coordinator, and
// starts them. waOpts and devCfg hold what does not depend on the stores.
func (c *Core) openCluster(ctx context.Context, cfg Config, waOpts whatsapp.Options, devCfg device.Config) error {
	log := c.Log
	self := NewReplicaID()
	db, err := postgres.Open(ctx, cfg.Cluster.DatabaseURI, postgres.Options{Holder: self})
	if err != nil {
		// postgres.Open keeps the password out of its errors.
		return fmt.Errorf("%s: %w", cfg.name("db"), err)
	}
	cc := &clusterCore{db: db}
	c.cluster = cc
	ttl := cmp.Or(cfg.Cluster.LeaseTTL, DefaultLeaseTTL)

	sessions, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		return err
	}
	waOpts.Shared = &whatsapp.SharedStore{Container: sessions.Container(), Pairings: sessions, PreKeys: sessions.PreKeys}
	if cc.key, err = db.ClusterKey(ctx, "forward"); err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	cc.cancel = cancel
	store := postgres.NewEvents(db)
	appended, hooks := store.Watch(runCtx)
	ec := hubConfig(store, cfg.Events, true, log, c.Metrics)
	ec.Shared = &events.Shared{Appended: appended, Webhooks: hooks}
	// One replica delivers the webhooks: the holder of their lease.
	var coord atomic.Pointer[cluster.Coordinator]
	ec.Deliver = func() bool {
		co := coord.Load()
		return co != nil && co.Delivers()
	}
	if c.Events, err = startHub(ctx, ec, c.Metrics); err != nil {
		return err
	}

	// No WhatsApp connection is dialled unless this replica's leases are
	// current: whatsmeow reconnects a broken connection by itself, and a
	// process woken from a pause past its leases must not reconnect the
	// devices another replica now runs (the watchdog drops them at once,
	// but whatsmeow's first retry does not wait).
	waOpts.HTTPClient = gated(waOpts.HTTPClient, func() bool {
		co := coord.Load()
		return co != nil && co.Current()
	})
	cc.statuses = postgres.NewStatuses(db)
	devCfg.Events = c.Events
	devCfg.WhatsApp = whatsapp.New(waOpts)
	devCfg.Sessions = sessions
	registry := postgres.NewRegistry(db)
	devCfg.Registry = registry
	devCfg.Cluster = true
	// A device is created here only once this replica holds its lease, so
	// that no round places it elsewhere meanwhile (the edge takes no lease
	// for an id the registry lacks).
	devCfg.Claim = func(ctx context.Context, id string) error {
		co := coord.Load()
		if co == nil {
			return domain.Errorf(domain.EUNAVAILABLE, "this replica is starting; try again")
		}
		return co.Claim(ctx, id)
	}
	devCfg.OnTransition = func(tr device.Transition) { cc.writer.Mark(tr.DeviceID) }
	c.Devices = device.New(devCfg)
	cc.writer = postgres.NewStatusWriter(cc.statuses, func(id string) (domain.Status, bool) {
		st, err := c.Devices.Get(context.Background(), id)
		return st, err == nil
	}, log.With("component", "status"), 0)
	wctx, stopWriter := context.WithCancel(context.WithoutCancel(ctx))
	cc.stopWriter, cc.writerDone = stopWriter, make(chan struct{})
	go func() {
		defer close(cc.writerDone)
		cc.writer.Run(wctx)
	}()
	if err := c.Devices.Start(ctx); err != nil {
		return err
	}

	// The leases renew on a small pool of their own: on the shared one
	// they would queue behind the sessions' traffic (a restore of many
	// devices takes every connection), and a renewal that waits 2/3 of the
	// TTL stops every device of the replica.
	if cc.leaseDB, err = postgres.Open(ctx, cfg.Cluster.DatabaseURI, postgres.Options{Holder: self, MaxConns: 3}); err != nil {
		return fmt.Errorf("%s: %w", cfg.name("db"), err)
	}
	cc.coord = cluster.New(cluster.Config{
		Leases:  postgres.NewLeases(cc.leaseDB),
		Devices: c.Devices,
		Addr:    cfg.Cluster.AdvertiseURL,
		TTL:     ttl,
		Wake:    db.Listen(runCtx, placementChannel),
		Notify:  func(ctx context.Context) error { return db.Notify(ctx, placementChannel) },
		Registered: func(ctx context.Context, id string) (bool, error) {
			_, ok, err := registry.Get(ctx, id)
			return ok, err
		},
		// The dispatchers read the gate (ec.Deliver) only when they wake:
		// wake them when it opens. A drain waits for the deliveries in
		// flight before the next replica may start delivering.
		OnDeliver: func(delivers bool) {
			if delivers {
				c.Events.WakeDispatchers()
			}
		},
		WaitDeliveries: c.Events.WaitDeliveries,
		Logger:         log.With("component", "cluster"),
	})
	coord.Store(cc.coord)
	cc.wg.Add(1)
	go func() {
		defer cc.wg.Done()
		if err := cc.coord.Run(runCtx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("the cluster coordinator stopped", "err", err)
		}
	}()
	log.Info("replica of a cluster on PostgreSQL", "replica", self, "advertise_url", cfg.Cluster.AdvertiseURL, "lease_ttl", ttl.String())
	return nil
}

// stop stops the coordinator and what runs beside it. Devices still
// running stay running (Drain hands them over first).
func (cc *clusterCore) stop() {
	if cc.cancel != nil {
		cc.cancel()
	}
	cc.wg.Wait()
}

// stopStatus writes the last statuses and stops the writer.
func (cc *clusterCore) stopStatus() {
	if cc.stopWriter != nil {
		cc.stopWriter()
		<-cc.writerDone
	}
}

// drain hands every device of this replica over to the others.
func (cc *clusterCore) drain(ctx context.Context) error {
	if cc.coord == nil {
		return nil
	}
	return cc.coord.Drain(ctx)
}

// ready tells whether this replica can serve: it renews its leases.
func (cc *clusterCore) ready() bool {
	return cc.coord != nil && !cc.coord.Fenced()
}

// router is the coordinator as the HTTP edge asks it.
type router struct{ c *cluster.Coordinator }

func (r router) Route(ctx context.Context, id string) (httpapi.Route, error) {
	route := r.c.Route
	if httpapi.Forwarded(ctx) {
		route = r.c.RouteForwarded
	}
	local, addr, retry, err := route(ctx, id)
	return httpapi.Route{Local: local, Holder: addr, URL: addr, RetryAfter: retry}, err
}

// clusterDevices is the device service of one replica among several as
// the HTTP adapter sees it: a device that does not run here (its holder
// could not be reached for a read, or it is between replicas) is read
// from the status table.
type clusterDevices struct {
	*device.Service
	statuses *postgres.Statuses
}

func (d clusterDevices) Get(ctx context.Context, id string) (domain.Status, error) {
	st, err := d.Service.Get(ctx, id)
	if code := domain.ErrorCode(err); code != domain.ENOTFOUND && code != domain.EUNAVAILABLE {
		return st, err
	}
	shared, found, serr := d.statuses.Get(ctx, id)
	switch {
	case serr != nil:
		return domain.Status{}, storeError(serr)
	case !found:
		return domain.Status{}, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	return shared, nil
}

// statusListing lists every device of every replica from the status table.
type statusListing struct{ statuses *postgres.Statuses }

func (l statusListing) List(ctx context.Context) ([]domain.Status, error) {
	sts, err := l.statuses.List(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	return sts, nil
}

// loggedIn lists the devices logged in on any replica.
func (l statusListing) loggedIn(ctx context.Context) ([]string, error) {
	sts, err := l.List(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, st := range sts {
		if st.LoggedIn {
			ids = append(ids, st.DeviceID)
		}
	}
	return ids, nil
}

// storeError is the answer to a read of the shared database that failed.
func storeError(err error) error {
	if errors.Is(err, ports.ErrStoreUnavailable) {
		return domain.Wrap(domain.EUNAVAILABLE, err, "the shared database cannot be reached; try again")
	}
	return err
}

// errNotCurrent refuses a WhatsApp dial while this replica's leases are not
// current.
var errNotCurrent = errors.New("this replica's device leases are not current: not connecting")

// gated returns base (whatsmeow's own default when nil) with every
// request refused while may is false.
func gated(base *http.Client, may func() bool) *http.Client {
	if base == nil {
		base = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	}
	next := base.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	c := *base
	c.Transport = gatedTransport{next: next, may: may}
	return &c
}

type gatedTransport struct {
	next http.RoundTripper
	may  func() bool
}

func (g gatedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if !g.may() {
		if r.Body != nil {
			_ = r.Body.Close()
		}
		return nil, errNotCurrent
	}
	return g.next.RoundTrip(r)
}
