// Package sandbox is the contract of the simulated WhatsApp network that
// "whatsapp sandbox" serves: the types and the interface the simulator
// (adapters/wasim) implements and the HTTP adapter (adapters/httpapi)
// serves under /sandbox. It is shared by both adapters and imports nothing
// of ours; the domain knows nothing of it.
package sandbox

import (
	"context"
	"time"
)

// Phone is a simulated WhatsApp account of the sandbox.
type Phone struct {
	Phone    string // digits
	PushName string
	JID      string // the account's own JID, device 0
}

// Device is a companion device linked to a simulated account.
type Device struct {
	JID      string
	LinkedAt time.Time
	Online   bool // has an open, logged-in connection now
}

// Message is a text a simulated account received.
type Message struct {
	From      string // the sender's device JID
	ID        string
	Timestamp time.Time
	Text      string
	// Chat is who the conversation is with: the sender for a received
	// message, the recipient for the account's own copy of a message one of
	// its linked devices sent.
	Chat string
	// FromMe marks the copy of a message sent by one of the account's own
	// linked devices.
	FromMe bool
}

// Connections counts the connections open to the simulated server.
type Connections struct {
	Open     int            // every open websocket
	LoggedIn int            // of those, the ones logged in as a device
	ByDevice map[string]int // logged-in connections by device JID
	Attempts int            // connection attempts since start, refused ones included
	// MaxByDevice is, per device JID, the most connections logged in as
	// that device at the same time since start: a login that replaced a
	// live connection counts both. 1 proves the device never had two.
	MaxByDevice map[string]int
}

// Sent is what a simulated phone's send did: the message id and time, and
// which linked devices got it now or will at their next login.
type Sent struct {
	ID        string
	Timestamp time.Time
	Delivered []string // device JIDs online, which acknowledged it
	Offline   []string // device JIDs that get it when they next log in
}

// NetworkFault breaks the simulated network on purpose.
type NetworkFault struct {
	Drop   bool          // drop every open connection now
	Refuse time.Duration // then refuse new connections for this long
}

// Network is the control surface of the simulated WhatsApp network: it
// plays the phones that link devices and receive messages.
type Network interface {
	// CreatePhone creates a simulated account, or returns the existing one.
	CreatePhone(ctx context.Context, phone, pushName string) (Phone, error)
	// Scan makes phone scan a QR text and link the device that shows it. It
	// returns the JID of the linked device once linking is complete.
	Scan(ctx context.Context, phone, qr string) (string, error)
	// EnterCode makes phone enter a pairing code requested for its number,
	// and returns the linked device's JID once linking is complete.
	EnterCode(ctx context.Context, phone, code string) (string, error)
	// Devices lists the companion devices linked to phone.
	Devices(ctx context.Context, phone string) ([]Device, error)
	// RemoveDevice unlinks a companion device from the phone; a connected
	// device is logged out at once.
	RemoveDevice(ctx context.Context, phone, jid string) error
	// SendFromPhone makes phone send a text to another account (a phone
	// number or user JID): encrypted to every linked device of the
	// recipient, and as a from-me copy to the sender's other linked devices.
	SendFromPhone(ctx context.Context, phone, to, text string) (Sent, error)
	// Messages lists what phone received, oldest first.
	Messages(ctx context.Context, phone string) ([]Message, error)
	// Connections counts the connections open to the simulated server.
	Connections(ctx context.Context) (Connections, error)
	// Disrupt applies a network fault and returns how many connections it
	// dropped.
	Disrupt(ctx context.Context, fault NetworkFault) (int, error)
	// CertificateRoot returns the public key the simulated server's noise
	// certificates chain to: a client must trust it (whatsmeow's
	// WACertPubKey) to connect.
	CertificateRoot(ctx context.Context) ([32]byte, error)
}
