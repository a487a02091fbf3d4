package device

import (
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// Inputs.
type input interface{ isInput() }

type (
	// start: the device was loaded at start-up.
	start struct{}
	// created: the slot was just made and recorded in the registry; Op is
	// answered once device.created is emitted.
	created struct{ Op uint64 }
	// cmdLogin: log in by QR code, or by pairing code for Phone.
	cmdLogin struct {
		Op     uint64
		Method domain.PairingMethod
		Phone  string
	}
	cmdLogout    struct{ Op uint64 }
	cmdDelete    struct{ Op uint64 }
	cmdReconnect struct{ Op uint64 }
	// cmdShutdown: the service is closing, or (Drop) this device moves to
	// another replica; the session stays.
	cmdShutdown struct{ Drop bool }
	// ping changes nothing: its reply comes once every input before it was
	// applied and every job they started has run (tests use it to settle).
	ping struct{ Op uint64 }
	// clientEvent is an event of the client Gen. Identity is the client's
	// identity when the event is Connected.
	clientEvent struct {
		Gen      uint64
		Event    domain.Event
		Identity domain.Identity
	}
	// pairingOpened: the temporary session Key was opened as client Gen
	// and QR pairing started on it, or Err.
	pairingOpened struct {
		Gen uint64
		Key string
		Err error
	}
	// codeGiven: WhatsApp's answer to a pairing-code request.
	codeGiven struct {
		Gen       uint64
		Phone     string
		Code      string
		ExpiresAt time.Time
		Err       error
	}
	// promoted: the paired session moved to its place and the registry
	// records it, or Err.
	promoted struct {
		Gen uint64
		Err error
	}
	// discarded: a pairing's temporary session is gone.
	discarded struct{ Gen uint64 }
	// opened: the linked session was opened as client Gen. Linked is false
	// when it no longer holds a session; Err when it cannot be read.
	opened struct {
		Gen    uint64
		Linked bool
		Err    error
	}
	// connectFailed: Connect on client Gen failed.
	connectFailed struct {
		Gen uint64
		Err error
	}
	// loggedOutDone: the logout request on client Gen returned.
	loggedOutDone struct {
		Gen uint64
		Err error
	}
	// removed: the session files are gone and the registry updated, or
	// Err says what failed (the files are then kept, and the registry says
	// so).
	removed struct {
		Err error
		At  time.Time // when the registry recorded the end: the state's since
	}
	// slotDeleted: the slot is gone from the registry (and its files), or
	// Err; FilesGone tells whether the files went.
	slotDeleted struct {
		Err       error
		FilesGone bool
	}
	// timerFired: timer Seq ran out.
	timerFired struct{ Seq uint64 }
)

func (start) isInput()         {}
func (created) isInput()       {}
func (cmdLogin) isInput()      {}
func (cmdLogout) isInput()     {}
func (cmdDelete) isInput()     {}
func (cmdReconnect) isInput()  {}
func (cmdShutdown) isInput()   {}
func (ping) isInput()          {}
func (clientEvent) isInput()   {}
func (pairingOpened) isInput() {}
func (codeGiven) isInput()     {}
func (promoted) isInput()      {}
func (discarded) isInput()     {}
func (opened) isInput()        {}
func (connectFailed) isInput() {}
func (loggedOutDone) isInput() {}
func (removed) isInput()       {}
func (slotDeleted) isInput()   {}
func (timerFired) isInput()    {}

// Effects. Every blocking one runs off the owner and reports back.
type effect interface{ isEffect() }

type (
	// reply answers the caller Op.
	reply struct {
		Op      uint64
		Err     error
		QR      string
		Code    string
		Expires time.Time
		Warning string
		// AfterJobs: answer only once the jobs started so far have run.
		AfterJobs bool
	}
	// openPairing makes a temporary session, opens it as client Gen and
	// starts QR pairing: pairingOpened.
	openPairing struct{ Gen uint64 }
	// askCode asks client Gen for a pairing code for Phone: codeGiven.
	askCode struct {
		Gen   uint64
		Phone string
	}
	// promote closes client Gen, moves its session Key to its place for
	// Identity's JID and records it in the registry: promoted.
	promote struct {
		Gen      uint64
		Key      string
		Identity domain.Identity
	}
	// discard deletes the temporary session Key: discarded.
	discard struct {
		Gen uint64
		Key string
	}
	// connect opens the linked session JID as client Gen, then connects it:
	// opened, and connectFailed when Connect fails.
	connect struct {
		Gen uint64
		JID string
	}
	// closeClient closes client Gen, without logging out. Its pending
	// calls are cancelled at once.
	closeClient struct{ Gen uint64 }
	// disconnect drops client Gen's connection, keeping it open.
	disconnect struct{ Gen uint64 }
	// logout unlinks client Gen on WhatsApp: loggedOutDone.
	logout struct{ Gen uint64 }
	// remove deletes session JID's files, then records in the registry
	// that the slot's session ended for Reason: removed.
	remove struct {
		JID    string
		Reason domain.Reason
	}
	// deleteSlot deletes session JID's files (if any) and the slot: slotDeleted.
	deleteSlot struct {
		JID    string
		Reason domain.Reason // recorded if the files cannot be removed
	}
	// save records the slot (JID, ended reason) in the registry.
	save struct{}
	// startTimer posts timerFired{Seq} after the unlink wait.
	startTimer struct{ Seq uint64 }
	// observeLogin counts a login's outcome for metrics.
	observeLogin struct {
		Method  domain.PairingMethod
		Outcome string
	}
	// warn logs a warning about the device, with its reason.
	warn struct{ Msg string }
	// stop ends the owner once the jobs under way are done.
	stop struct{}
	// emit tells the live events of Type with Data (one of the
	// domain.*EventData payloads, nil for device.created and
	// device.deleted). The owner only queues it (ports.Events.Emit): the
	// event service writes it to its log before telling anyone.
	emit struct {
		Type domain.EventType
		Data any
	}
	// ackWritten calls Done, off the owner, once every event emitted so
	// far is in the event log: an incoming message is acknowledged to
	// WhatsApp only then.
	ackWritten struct{ Done func() }
)

func (reply) isEffect()        {}
func (openPairing) isEffect()  {}
func (askCode) isEffect()      {}
func (promote) isEffect()      {}
func (discard) isEffect()      {}
func (connect) isEffect()      {}
func (closeClient) isEffect()  {}
func (disconnect) isEffect()   {}
func (logout) isEffect()       {}
func (remove) isEffect()       {}
func (deleteSlot) isEffect()   {}
func (save) isEffect()         {}
func (startTimer) isEffect()   {}
func (observeLogin) isEffect() {}
func (warn) isEffect()         {}
func (stop) isEffect()         {}
func (emit) isEffect()         {}
func (ackWritten) isEffect()   {}
