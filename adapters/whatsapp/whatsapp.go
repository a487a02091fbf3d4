// Package whatsapp implements ports.WhatsApp with go.mau.fi/whatsmeow: one
// whatsmeow client per session, each on its own pure-Go SQLite database
// (or all in one shared whatsmeow store: see SharedStore), its events
// translated into domain events.
//
// The adapter talks to WhatsApp unless Options point it elsewhere: the
// sandbox gives it the simulator's HTTP client and certificate root, which
// it installs through whatsmeow's own setters. Production wiring leaves both
// nil and touches neither.
package whatsapp

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	signalLog "go.mau.fi/libsignal/logger"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	waLog "go.mau.fi/whatsmeow/util/log"
	"google.golang.org/protobuf/proto"

	// The database/sql driver "sqlite": pure Go, so the binary stays static.
	_ "modernc.org/sqlite"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

var (
	_ ports.WhatsApp = (*WhatsApp)(nil)
	_ ports.Client   = (*Client)(nil)
)

// Options configures the adapter.
type Options struct {
	// OS is the name phones show for linked devices (whatsmeow's
	// DeviceProps.Os). It is process-wide in whatsmeow; "" keeps its default.
	OS string
	// Logger receives whatsmeow's logs; nil discards them.
	Logger *slog.Logger
	// Debug passes whatsmeow's debug logs through; they are dropped
	// otherwise.
	Debug bool
	// HTTPClient, when set, carries every WhatsApp websocket connection
	// (before and after login) instead of whatsmeow's default client. The
	// sandbox sets it to reach the simulator.
	HTTPClient *http.Client
	// CertRoot, when set, replaces the root public key that WhatsApp's
	// server certificates must chain to (whatsmeow.WACertPubKey, a
	// process-wide variable). The sandbox sets it to the simulator's key.
	CertRoot *[32]byte
	// Locate turns a session key (ports.SessionStore's) into the path of
	// its database; the wiring gives it the session store's Locate. nil
	// takes keys as paths (the adapter's own tests).
	Locate func(key string) (string, error)
	// FirstCodeLife and CodeLife are how long the first QR code of a
	// pairing, and each later one, are shown. Default 60 s and 20 s, as
	// WhatsApp's web client does; tests shorten them.
	FirstCodeLife, CodeLife time.Duration
	// OnWhatsAppFor and OffWhatsAppFor are how long an answer to "is this
	// number on WhatsApp?" is remembered: a yes (default a day) and a no
	// (default a minute).
	OnWhatsAppFor, OffWhatsAppFor time.Duration
	// SessionIdle is how long a session database stays open unused before
	// its connection is closed (see sessiondb.go); 0 means 5 s.
	SessionIdle time.Duration
	// Shared, when set, keeps every session in one whatsmeow store (the
	// shared PostgreSQL database of several replicas) instead of a SQLite
	// file each; Locate and SessionIdle are then unused.
	Shared *SharedStore
}

// SharedStore is one whatsmeow store that holds every session, as devices
// of one sqlstore.Container, and the session store's record of which
// device each pairing is. A linked session's key is its JID, the device's
// key in the container; a pairing's key (pairing:…) names an unpaired
// device that exists only in memory until whatsmeow saves it once the
// phone links it, so the adapter tells the session store which device it
// opened for the pairing, and asks it which device a pairing became.
type SharedStore struct {
	// Container holds the sessions. Clients never close it: it belongs to
	// whoever made it.
	Container *sqlstore.Container
	// Pairings is the session store's record of the pairings
	// (adapters/postgres.Sessions implements it).
	Pairings Pairings
	// PreKeys, when set, gives each linked session the prekey store to
	// use instead of inner, whatsmeow's own, when it is opened
	// (adapters/postgres.Sessions.PreKeys writes a first login's 812
	// prekeys in one statement rather than 812).
	PreKeys func(jid types.JID, inner store.PreKeyStore) store.PreKeyStore
}

// Pairings records which whatsmeow device a pairing session is.
type Pairings interface {
	// BindPairing records that the pairing key is, from now on, the
	// unpaired device whose noise key's private half hashes (SHA-256) to
	// noiseHash. Open calls it each time it opens an unpaired pairing,
	// before the device can pair.
	BindPairing(ctx context.Context, key string, noiseHash []byte) error
	// PairedJID returns the JID of the device the pairing key linked, ""
	// while it has not.
	PairedJID(ctx context.Context, key string) (string, error)
}

// pairingPrefix starts the keys of pairing sessions (ports.SessionStore).
const pairingPrefix = "pairing:"

// WhatsApp opens whatsmeow sessions. It is safe for concurrent use.
type WhatsApp struct {
	opts Options
	log  *slog.Logger
}

// globalsMu guards the whatsmeow package variables New sets. whatsmeow reads
// them without a lock, so New writes them only when they change: in
// practice once per process, before any client exists.
var (
	globalsMu          sync.Mutex
	signalLogInstalled bool // by the first New
)

// New returns the adapter. It applies Options.OS and Options.CertRoot to
// whatsmeow's process-wide settings and routes libsignal's process-wide log
// to Options.Logger (the first New's), so call it before opening sessions.
func New(opts Options) *WhatsApp {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	globalsMu.Lock()
	if opts.OS != "" && store.DeviceProps.GetOs() != opts.OS {
		store.DeviceProps.Os = proto.String(opts.OS)
	}
	if opts.CertRoot != nil && whatsmeow.WACertPubKey != *opts.CertRoot {
		whatsmeow.WACertPubKey = *opts.CertRoot
	}
	if !signalLogInstalled {
		// libsignal otherwise installs a stdout logger lazily, on first use,
		// which races when sessions start concurrently. This replaces any
		// logger installed before (the simulator's quiet one, when it is
		// linked in), so that the gateway's log gets libsignal's warnings.
		var l signalLog.Loggable = signalLogger{log: log.With("component", "libsignal"), debug: opts.Debug}
		signalLog.Setup(&l)
		signalLogInstalled = true
	}
	globalsMu.Unlock()
	if opts.FirstCodeLife <= 0 {
		opts.FirstCodeLife = firstCodeLife
	}
	if opts.CodeLife <= 0 {
		opts.CodeLife = codeLife
	}
	if opts.OnWhatsAppFor <= 0 {
		opts.OnWhatsAppFor = onWhatsAppFor
	}
	if opts.OffWhatsAppFor <= 0 {
		opts.OffWhatsAppFor = offWhatsAppFor
	}
	if opts.Shared == nil {
		go emptySession() // made before the first login needs it
	}
	return &WhatsApp{opts: opts, log: log}
}

// Open opens the session named key: its database (Options.Locate says
// where), created (mode 0600) with an empty, unpaired session if it does
// not exist. The database holds one session. Events are reported to events
// in the order they happen, from the client's goroutines; ctx is the
// session's lifetime and the context every background task of the client
// runs on. Open does not connect.
//
// With a SharedStore, the session is a device of the shared container: a
// JID key opens that device (an unpaired one when it is gone, as an
// emptied database would); a pairing key opens the device the pairing
// linked, or a new unpaired one that it binds to the pairing.
func (w *WhatsApp) Open(ctx context.Context, key string, events func(domain.Event)) (ports.Client, error) {
	if w.opts.Shared != nil {
		c, err := w.openShared(ctx, key, events)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	path := key
	if w.opts.Locate != nil {
		var err error
		if path, err = w.opts.Locate(key); err != nil {
			return nil, err
		}
	}
	c, err := w.open(ctx, path, events)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (w *WhatsApp) open(ctx context.Context, path string, events func(domain.Event)) (*Client, error) {
	if err := createPrivate(path); err != nil {
		return nil, fmt.Errorf("create session database: %w", err)
	}
	db, err := openSessionDB(path, w.opts.SessionIdle)
	if err != nil {
		return nil, fmt.Errorf("open session database: %w", err)
	}
	log := w.log.With("session", path)
	waLogger := newLogger(log, w.opts.Debug)
	container := sqlstore.NewWithDB(db, "sqlite", waLogger.Sub("Database"))
	if err := container.Upgrade(ctx); err != nil {
		_ = container.Close()
		return nil, fmt.Errorf("prepare session database: %w", err)
	}
	dev, err := container.GetFirstDevice(ctx)
	if err != nil {
		_ = container.Close()
		return nil, fmt.Errorf("load session: %w", err)
	}
	return w.newClient(ctx, dev, container, log, waLogger, events), nil
}

// openShared opens the session key in the shared store; see Open.
func (w *WhatsApp) openShared(ctx context.Context, key string, events func(domain.Event)) (*Client, error) {
	shared := w.opts.Shared
	log := w.log.With("session", key)
	waLogger := newLogger(log, w.opts.Debug)
	var dev *store.Device
	if strings.HasPrefix(key, pairingPrefix) {
		linked, err := shared.Pairings.PairedJID(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("load session: %w", err)
		}
		if linked != "" {
			if dev, err = w.sharedDevice(ctx, linked); err != nil {
				return nil, err
			}
		}
		if dev == nil {
			dev = shared.Container.NewDevice()
			h := sha256.Sum256(dev.NoiseKey.Priv[:])
			if err := shared.Pairings.BindPairing(ctx, key, h[:]); err != nil {
				return nil, fmt.Errorf("record the pairing's device: %w", err)
			}
		}
	} else {
		var err error
		if dev, err = w.sharedDevice(ctx, key); err != nil {
			return nil, err
		}
		if dev == nil {
			dev = shared.Container.NewDevice()
		}
	}
	if shared.PreKeys != nil && dev.Initialized {
		// An unpaired device gets its stores from whatsmeow when it is
		// saved, paired; it uploads no prekeys before the device service
		// reopens it by its JID (the pairing's client stays quiet).
		dev.PreKeys = shared.PreKeys(*dev.ID, dev.PreKeys)
	}
	return w.newClient(ctx, dev, nil, log, waLogger, events), nil
}

// sharedDevice loads the device of jid from the shared store, nil if it
// has none.
func (w *WhatsApp) sharedDevice(ctx context.Context, jid string) (*store.Device, error) {
	id, err := types.ParseJID(jid)
	if err != nil || id.User == "" || id.Server == "" {
		return nil, domain.Errorf(domain.EINVALID, "%q is not a session key", jid)
	}
	dev, err := w.opts.Shared.Container.GetDevice(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("load session: %w", err)
	}
	return dev, nil
}

// newClient makes the client of dev; container is the session's own
// database, closed with the client (nil for the shared store).
func (w *WhatsApp) newClient(ctx context.Context, dev *store.Device, container *sqlstore.Container, log *slog.Logger, waLogger waLog.Logger, events func(domain.Event)) *Client {
	wa := whatsmeow.NewClient(dev, waLogger)
	if w.opts.HTTPClient != nil {
		wa.SetPreLoginHTTPClient(w.opts.HTTPClient)
		wa.SetWebsocketHTTPClient(w.opts.HTTPClient)
	}
	c := newClient(ctx, wa, container, log, events)
	c.firstLife, c.life = w.opts.FirstCodeLife, w.opts.CodeLife
	c.onFor, c.offFor = w.opts.OnWhatsAppFor, w.opts.OffWhatsAppFor
	return c
}
