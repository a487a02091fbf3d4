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
// from several goroutines, but the device service calls the lifecycle
// methods (StartQR, PairCode, Connect, Logout, Close) one at a time.
type Client interface {
	// Identity returns the linked account, and false while unpaired.
	Identity() (domain.Identity, bool)
	// StartQR connects an unpaired session and starts QR pairing. QR codes
	// and the outcome arrive as events: QRCode, then Paired, PairingFailed or
	// PairingExpired.
	StartQR(ctx context.Context) error
	// PairCode asks WhatsApp for an 8-character pairing code for phone
	// (digits), shown on the phone under displayName. It connects first if
	// StartQR has not, and waits until WhatsApp allows the request. The
	// outcome arrives as events, as with StartQR.
	PairCode(ctx context.Context, phone, displayName string) (string, error)
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

// QRRenderer draws QR codes.
type QRRenderer interface {
	// PNG returns text encoded as a QR code in a PNG image.
	PNG(text string) ([]byte, error)
}

// Clock tells the time. Tests use a fake one.
type Clock interface {
	Now() time.Time
}

// Sandbox is the control surface of the simulated WhatsApp network: it
// plays the phones that link devices and receive messages.
type Sandbox interface {
	// CreatePhone creates a simulated account, or returns the existing one.
	CreatePhone(ctx context.Context, phone, pushName string) (domain.SandboxPhone, error)
	// Scan makes phone scan a QR text and link the device that shows it. It
	// returns the JID of the linked device once linking is complete.
	Scan(ctx context.Context, phone, qr string) (string, error)
	// EnterCode makes phone enter a pairing code requested for its number,
	// and returns the linked device's JID once linking is complete.
	EnterCode(ctx context.Context, phone, code string) (string, error)
	// Devices lists the companion devices linked to phone.
	Devices(ctx context.Context, phone string) ([]domain.SandboxDevice, error)
	// RemoveDevice unlinks a companion device from the phone; a connected
	// device is logged out at once.
	RemoveDevice(ctx context.Context, phone, jid string) error
	// SendFromPhone makes phone send a text to another account (a phone
	// number or user JID): encrypted to every linked device of the
	// recipient, and as a from-me copy to the sender's other linked devices.
	SendFromPhone(ctx context.Context, phone, to, text string) (domain.SandboxSent, error)
	// Messages lists what phone received, oldest first.
	Messages(ctx context.Context, phone string) ([]domain.SandboxMessage, error)
	// Connections counts the connections open to the simulated server.
	Connections(ctx context.Context) (domain.SandboxConnections, error)
	// Disrupt applies a network fault and returns how many connections it
	// dropped.
	Disrupt(ctx context.Context, fault domain.NetworkFault) (int, error)
}
