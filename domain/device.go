package domain

import (
	"time"
)

// State is where a device is in its lifecycle.
type State string

// The device states. A device is created disconnected; login moves it to
// pairing, a successful pairing or restore to connecting and then connected.
// Every transition is listed in domain/device/machine.go, and drawn in the
// README.
const (
	// StateDisconnected: the slot has no session, and no pairing is under
	// way (it never had one, or its pairing ended: see the reason).
	StateDisconnected State = "disconnected"
	// StatePairing: a QR code or pairing code is out, waiting for the phone.
	StatePairing State = "pairing"
	// StateConnecting: connecting with a stored session, including
	// automatic reconnects after a network error.
	StateConnecting State = "connecting"
	// StateConnected: logged in and online.
	StateConnected State = "connected"
	// StateOffline: the slot has a session, but it is not connected and
	// the client does not retry by itself (another connection took over,
	// WhatsApp refused or banned it for a while): see the reason. Reconnect
	// or log out.
	StateOffline State = "offline"
	// StateUnlinking: the session is ending (logout or delete asked for
	// it, or WhatsApp ended it): waiting for the connection to unlink it on
	// WhatsApp, or removing its files. It ends in logged_out, or back where
	// it came from when WhatsApp cannot be reached.
	StateUnlinking State = "unlinking"
	// StateLoggedOut: the slot had a session and it ended; the reason says
	// why. The slot stays, ready for a new login.
	StateLoggedOut State = "logged_out"
)

// States lists every state, in the order the README draws them.
var States = []State{StateDisconnected, StatePairing, StateConnecting, StateConnected, StateOffline, StateUnlinking, StateLoggedOut}

// Reason says why a device is in its state, in a word a program can test.
// Status.LastError says the same for people, with details.
type Reason string

// The reasons. Each belongs to one or two states.
const (
	ReasonNone Reason = ""

	// disconnected: how the last pairing ended.
	ReasonPairingExpired   Reason = "pairing_expired"   // no code was scanned or entered in time
	ReasonPairingFailed    Reason = "pairing_failed"    // WhatsApp or the phone refused, or WhatsApp was unreachable
	ReasonPairingCancelled Reason = "pairing_cancelled" // logout during the pairing

	// connecting: why it is reconnecting.
	ReasonConnectionLost Reason = "connection_lost"

	// offline: why the session is not connected.
	ReasonStreamReplaced Reason = "stream_replaced" // another connection uses this session
	ReasonTemporaryBan   Reason = "temporary_ban"   // WhatsApp banned the account for a while
	ReasonClientOutdated Reason = "client_outdated" // WhatsApp refuses this client version: upgrade gowa
	ReasonRefused        Reason = "connect_refused" // WhatsApp refused the connection for another reason
	ReasonConnectFailed  Reason = "connect_failed"  // the connection could not be made

	// logged_out (and unlinking, which ends in it): what ended the session.
	ReasonLogout            Reason = "logout"             // the API's logout
	ReasonRemovedOnPhone    Reason = "removed_on_phone"   // unlinked in the phone's linked devices (WhatsApp 401)
	ReasonAccountLocked     Reason = "account_locked"     // WhatsApp says the main device is gone or locked (403)
	ReasonBanned            Reason = "banned"             // WhatsApp banned the account (406)
	ReasonLoggedOutOther    Reason = "whatsapp_logout"    // WhatsApp ended it for another reason
	ReasonSessionUnreadable Reason = "session_unreadable" // the session database cannot be opened (corrupt, wrong schema)
	ReasonSessionMissing    Reason = "session_missing"    // the session files were gone at start-up
	ReasonSessionEmpty      Reason = "session_empty"      // the session database no longer holds a linked session
)

// PairingMethod is how a device is being linked.
type PairingMethod string

// The pairing methods.
const (
	PairingQR   PairingMethod = "qr"
	PairingCode PairingMethod = "code"
)

// deviceIDPattern is the device id rule as the error message states it;
// ValidateDeviceID checks it by hand, since every device request (the
// status endpoint most of all) checks an id.
const deviceIDPattern = `^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`

// ValidateDeviceID returns an EINVALID error unless id is a valid device id:
// 1 to 64 letters, digits, dots, underscores or dashes, starting with a
// letter or digit. The rule keeps ids safe as file and URL path segments.
func ValidateDeviceID(id string) error {
	if !validDeviceID(id) {
		return Errorf(EINVALID, "device_id must match %s", deviceIDPattern)
	}
	return nil
}

// validDeviceID applies deviceIDPattern.
func validDeviceID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// Slot is a device as the registry stores it: the user-chosen id, the JID
// of its linked session once it has one, and why its last session ended.
type Slot struct {
	ID        string
	JID       string // companion JID, "" while not linked
	CreatedAt time.Time
	// Ended is the logged_out reason once a session of this slot ended,
	// ReasonNone otherwise. A slot with both a JID and a reason holds the
	// files of an ended session that could not be removed (or cannot be
	// read): it is not connected at start, and a logout removes them.
	Ended Reason
	// EndedAt is when the session ended.
	EndedAt time.Time
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
	Reason    Reason   // why it is in State; ReasonNone when nothing needs saying
	Identity  Identity // zero while not linked
	LoggedIn  bool     // a linked session exists (connecting, connected, offline, unlinking)
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
