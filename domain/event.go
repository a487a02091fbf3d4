package domain

import "time"

// Event is something a WhatsApp session reports about itself. The WhatsApp
// adapter translates its library's events into these; the device service
// turns them into state changes.
type Event interface{ event() }

// QRCode: a new QR code is out. It is valid for Timeout from now.
type QRCode struct {
	Code    string
	Timeout time.Duration
}

// PairingExpired: every QR code of the series was shown and none was
// scanned (or the pre-login connection closed). The client is disconnected.
type PairingExpired struct{}

// PairingFailed: the phone scanned or entered a code but linking failed.
type PairingFailed struct{ Reason string }

// Paired: pairing succeeded and the session is saved in the client's
// database. The client has stopped; the service moves the session to its
// permanent place and connects it again.
type Paired struct{ Identity Identity }

// Connected: logged in and online.
type Connected struct{}

// Disconnected: the connection dropped; the client reconnects on its own.
type Disconnected struct{}

// LoggedOut: WhatsApp or the phone ended the session. The client has deleted
// its stored session. Reason is one of the logged_out reasons
// (ReasonRemovedOnPhone, ReasonBanned, …); Detail is WhatsApp's own words.
type LoggedOut struct {
	Reason Reason
	Detail string
}

// Offline: the session is still linked, but the connection closed and the
// client will not retry by itself: another connection took over
// (ReasonStreamReplaced), WhatsApp banned the account for a while
// (ReasonTemporaryBan), refuses this client version (ReasonClientOutdated)
// or refused the connection (ReasonRefused). Detail says more, for people.
type Offline struct {
	Reason Reason
	Detail string
}

// PushNameChanged: the account's own display name became known or changed.
type PushNameChanged struct{ PushName string }

func (QRCode) event()          {}
func (PairingExpired) event()  {}
func (PairingFailed) event()   {}
func (Paired) event()          {}
func (Connected) event()       {}
func (Disconnected) event()    {}
func (LoggedOut) event()       {}
func (Offline) event()         {}
func (PushNameChanged) event() {}
