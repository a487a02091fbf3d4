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
	// Open returns a client for the session database at path, creating an
	// empty, unpaired session there if none exists. The client reports what
	// happens to it by calling events, from its own goroutines, in order;
	// events must not block. ctx lives as long as the device: the client's
	// background work stops when it ends. Open does not connect.
	Open(ctx context.Context, path string, events func(domain.Event)) (Client, error)
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

// SessionStore keeps the session folders: storages/{jid}/session.db for
// linked sessions, and temporary folders for pairings in progress.
type SessionStore interface {
	// NewPairing makes a temporary session folder for device id and returns
	// the path of its session database (not yet created).
	NewPairing(deviceID string) (string, error)
	// Promote moves the paired temporary session at pairingPath to its
	// permanent place for jid, atomically, and returns the new database
	// path. An existing session for jid is replaced.
	Promote(pairingPath, jid string) (string, error)
	// Discard deletes a temporary session.
	Discard(pairingPath string) error
	// Path returns the database path of jid's session.
	Path(jid string) string
	// Delete deletes jid's session folder. Deleting a missing one is not an
	// error.
	Delete(jid string) error
	// Sessions lists the linked sessions on disk and the temporary ones left
	// by pairings that were cut off.
	Sessions() ([]StoredSession, error)
}

// StoredSession is a session folder found on disk.
type StoredSession struct {
	JID      string // "" for a temporary pairing session
	Path     string // the session database
	DeviceID string // the device it was made for, when known
}

// Registry keeps the device slots.
type Registry interface {
	// List returns every slot, ordered by id.
	List(ctx context.Context) ([]domain.Slot, error)
	// Put creates or updates a slot.
	Put(ctx context.Context, slot domain.Slot) error
	// Delete removes a slot; removing a missing one is not an error.
	Delete(ctx context.Context, id string) error
}

// Clock tells the time. Tests use a fake one.
type Clock interface {
	Now() time.Time
}
