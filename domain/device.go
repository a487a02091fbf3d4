package domain

import (
	"regexp"
	"time"
)

// State is where a device is in its lifecycle.
type State string

// The device states. A device is created disconnected; login moves it to
// pairing, a successful pairing or restore to connecting and then connected.
const (
	// StateDisconnected: no WhatsApp connection. Status.LoggedIn tells
	// whether a session exists that a reconnect could use.
	StateDisconnected State = "disconnected"
	// StatePairing: a QR code or pairing code is out, waiting for the phone.
	StatePairing State = "pairing"
	// StateConnecting: connecting with a stored session, including
	// automatic reconnects after a network error.
	StateConnecting State = "connecting"
	// StateConnected: logged in and online.
	StateConnected State = "connected"
	// StateLoggedOut: WhatsApp or the phone ended the session. The slot
	// stays, ready for a new login.
	StateLoggedOut State = "logged_out"
)

// PairingMethod is how a device is being linked.
type PairingMethod string

// The pairing methods.
const (
	PairingQR   PairingMethod = "qr"
	PairingCode PairingMethod = "code"
)

var deviceIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateDeviceID returns an EINVALID error unless id is a valid device id:
// 1 to 64 letters, digits, dots, underscores or dashes, starting with a
// letter or digit. The rule keeps ids safe as file and URL path segments.
func ValidateDeviceID(id string) error {
	if !deviceIDPattern.MatchString(id) {
		return Errorf(EINVALID, "device_id must match %s", deviceIDPattern)
	}
	return nil
}

// Slot is a device as the registry stores it: the user-chosen id, and the
// JID of its linked session once it has one.
type Slot struct {
	ID        string
	JID       string // companion JID, "" while not linked
	CreatedAt time.Time
}

// Identity describes the WhatsApp account a session is linked to.
type Identity struct {
	JID      string // companion JID, e.g. "628123456789:12@s.whatsapp.net"
	Phone    string // the account's phone number, digits only
	PushName string
	Platform string
}

// Pairing describes a login in progress.
type Pairing struct {
	Method    PairingMethod
	QR        string    // the QR text currently shown (PairingQR only)
	Code      string    // the pairing code (PairingCode only)
	ExpiresAt time.Time // when the current QR or code stops being valid
}

// Status is a snapshot of a device.
type Status struct {
	DeviceID  string
	State     State
	Identity  Identity // zero while not linked
	LoggedIn  bool     // a linked session exists
	Connected bool     // logged in and online
	Since     time.Time
	LastError string // why the device last left a good state, "" if never
	Pairing   *Pairing
	CreatedAt time.Time
}

// SentMessage is WhatsApp's answer to a message we sent.
type SentMessage struct {
	ID        string
	Timestamp time.Time
}
