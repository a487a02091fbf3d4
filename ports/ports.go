// Package ports holds the interfaces the domain services need from the
// outside world. Adapters implement them; cmd/whatsapp chooses which.
package ports

import (
	"context"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// WhatsApp opens WhatsApp sessions.
type WhatsApp interface {
	// Open returns a client for the session named key (see SessionStore),
	// creating an empty, unpaired session if none exists. The client reports what
	// happens to it by calling events, from its own goroutines, in order;
	// events must not block. ctx lives as long as the device: the client's
	// background work stops when it ends. Open does not connect.
	Open(ctx context.Context, key string, events func(domain.Event)) (Client, error)
}

// Client is one WhatsApp session, paired or not. Its methods may be called
// from several goroutines at once: the device service closes a client
// while a Connect, PairCode or Logout call on it may still be waiting, and
// cancels the context Open got first so that such calls return. Close must
// wait for them. No event may be reported once Close has returned.
type Client interface {
	// Identity returns the linked account, and false while unpaired.
	Identity() (domain.Identity, bool)
	// StartQR connects an unpaired session and starts QR pairing. QR codes
	// and the outcome arrive as events: QRCode, then Paired, PairingFailed or
	// PairingExpired.
	StartQR(ctx context.Context) error
	// PairCode asks WhatsApp for an 8-character pairing code for phone
	// (digits), shown on the phone under displayName. It connects first if
	// StartQR has not, and waits until WhatsApp allows the request. It
	// returns the code and when it stops being usable. The outcome arrives
	// as events, as with StartQR.
	PairCode(ctx context.Context, phone, displayName string) (code string, expires time.Time, err error)
	// Connect connects a paired session. Connected, or a failure event,
	// follows. Network errors are retried by the client with backoff.
	Connect(ctx context.Context) error
	// Disconnect closes the connection without logging out.
	Disconnect()
	// Logout unlinks the device on WhatsApp and deletes the session data.
	Logout(ctx context.Context) error
	// SendText sends a text to a user JID.
	SendText(ctx context.Context, to, text string) (domain.SentMessage, error)
	// Close disconnects and releases the session database.
	Close() error
}

// SessionStore keeps the sessions: one per linked JID, and temporary ones
// for pairings in progress. The domain names a session by a key, never by
// where it is stored: a linked session's key is its JID, a pairing's is
// what NewPairing returned. The WhatsApp adapter opens sessions by the same
// keys (the wiring tells it where they are).
type SessionStore interface {
	// NewPairing makes a temporary session for device id and returns its
	// key. The session is empty until the WhatsApp adapter opens it.
	NewPairing(deviceID string) (key string, err error)
	// Promote makes the paired temporary session pairingKey the linked
	// session of jid (key jid), atomically. An existing session for jid is
	// replaced. The session must be closed. A key NewPairing did not make,
	// or a pairing that holds no session, is an error; an invalid jid is
	// EINVALID.
	Promote(pairingKey, jid string) error
	// Discard deletes a temporary session; a missing one is not an error.
	Discard(pairingKey string) error
	// Delete deletes jid's session. Deleting a missing one is not an
	// error; an invalid jid is EINVALID.
	Delete(jid string) error
	// Sessions lists the linked sessions and the temporary ones left by
	// pairings that were cut off.
	Sessions() ([]StoredSession, error)
}

// StoredSession is a session found in the store.
type StoredSession struct {
	JID      string // "" for a temporary pairing session
	Key      string // the session's key: its JID once linked
	DeviceID string // the device it was made for, when known
}

// Registry keeps the device slots.
type Registry interface {
	// List returns every slot, ordered by id.
	List(ctx context.Context) ([]domain.Slot, error)
	// Get returns the slot with id, and false when there is none.
	Get(ctx context.Context, id string) (domain.Slot, bool, error)
	// Put creates or updates a slot.
	Put(ctx context.Context, slot domain.Slot) error
	// Delete removes a slot; removing a missing one is not an error.
	Delete(ctx context.Context, id string) error
}

// Clock tells the time. Tests use a fake one.
type Clock interface {
	Now() time.Time
}
