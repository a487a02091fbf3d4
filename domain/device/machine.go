package device

import (
	"fmt"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// A device's lifecycle is the pure function transition: given the
// device's machine (its state as data) and one input (an API command, an
// event of its WhatsApp client, the result of a blocking job, a timer), it
// returns the next machine and the effects to carry out. It does no I/O and
// reads no clock (now is an argument): the device's owner goroutine
// (device.go) feeds it inputs one at a time, carries out the effects
// (jobs.go) off the owner, and feeds their results back as inputs.
// machine_test.go checks every (state, input) pair. The inputs and effects
// are in machine_io.go, the pairing rules in machine_pairing.go, the
// session and unlinking rules in machine_session.go.
//
// Every change of state or reason is published, and told once to
// Config.OnTransition, by the owner after the transition.
//
// The live events are effects too (emit): announce tells each change of
// connection once (device.connected, device.disconnected,
// device.logged_out, with the machine's reason), a pairing each new QR code
// or pairing code (device.pairing), a slot its creation and deletion, a
// client each message it received (message.received, acknowledged to
// WhatsApp once written: ackWritten). events.go has the owner's side.
//
// What each state accepts (anything else is ignored when it is an event or
// result, and refused with ECONFLICT naming the state when it is a command):
//
//	disconnected  login → pairing; delete
//	pairing       login (joins it), logout (cancels it), delete;
//	              QR code, paired → (promote) → connecting;
//	              pairing failed or expired → disconnected
//	connecting    connected → connected; logged out → unlinking;
//	              offline → offline; logout, delete → unlinking; reconnect
//	connected     disconnected → connecting; logged out → unlinking;
//	              offline → offline; logout, delete → unlinking; reconnect
//	offline       logout, delete → unlinking; reconnect → connecting;
//	              logged out → unlinking
//	unlinking     connected → log out on WhatsApp; logged out, logout done →
//	              remove files → logged_out; deadline or WhatsApp unreachable
//	              → back (connecting, connected, offline), or for a delete
//	              the slot goes anyway with a warning
//	logged_out    login → pairing (refused while files of the ended
//	              session are left); logout (removes them, else nothing to
//	              do); delete
//
// An unreadable session goes from connecting straight to logged_out
// (session_unreadable), its files kept; a session WhatsApp ended, or that
// holds nothing any more, goes through unlinking (removing the files).
type machine struct {
	ID       string
	State    domain.State
	Reason   domain.Reason
	Detail   string // for people: what happened last, "" when nothing
	Since    time.Time
	JID      string // the session's key; "" when the slot has none
	Identity domain.Identity

	// Gen names the current client: events and results of any other
	// client are stale and ignored. 0 when none is open or opening.
	Gen uint64
	// Seq hands out client generations and timer numbers.
	Seq uint64
	// Online tells whether the current client is logged in and online.
	Online bool

	Pair    pairing // while State is pairing
	Unlink  unlink  // while State is unlinking
	Waiters []waiter
	// Deleting: the slot is being deleted; Gone: it was, or the service
	// closed. Neither accepts anything more.
	Deleting, Gone bool

	// Told is the last device.connected, device.disconnected or
	// device.logged_out this device emitted, so that every change is told
	// exactly once (see announce).
	Told told
}

// told is an event about a device's connection, as announce emitted it.
type told struct {
	Type   domain.EventType
	Reason domain.Reason
}

// pairing is a login under way.
type pairing struct {
	Method    domain.PairingMethod
	Key       string // the temporary session, once opened
	QR        string
	Code      string
	Phone     string // the phone a code is for
	ExpiresAt time.Time
	Started   time.Time
	ForCode   bool // opened by a pairing-code login, not joined
	Opened    bool // the client is open and shows codes
	Asking    bool // a pairing-code request is in flight
	Promoting bool // paired: the session is moving to its place
	Identity  domain.Identity
	// Ending: the pairing is over and its temporary session being
	// discarded; the state becomes disconnected with EndReason then.
	Ending    bool
	EndReason domain.Reason
	EndDetail string
}

// unlink is a session ending.
type unlink struct {
	Phase   unlinkPhase
	Reason  domain.Reason // the logged_out reason it ends with
	Delete  bool          // the slot goes as well
	Timer   uint64        // the deadline of unlinkWaitOnline
	From    domain.State  // where to go back to when WhatsApp is unreachable
	Warning string        // for a delete that could not unlink on WhatsApp
}

type unlinkPhase int

const (
	unlinkWaitOnline unlinkPhase = iota // connecting, to log out on WhatsApp
	unlinkLoggingOut                    // the logout request is in flight
	unlinkRemoving                      // removing the session files
)

// waiter is a caller waiting for the outcome of its command.
type waiter struct {
	Op    uint64
	Kind  waitKind
	Phone string
	Err   error // waitEnded: the answer once the pairing is gone
}

type waitKind int

const (
	waitQR     waitKind = iota // the first QR code
	waitCode                   // a pairing code
	waitLogout                 // the end of a logout (or a cancelled pairing)
	waitDelete                 // the slot's removal
	waitEnded                  // a login whose pairing failed: told once it is gone
)

// step is one transition being computed.
type step struct {
	m    machine
	now  time.Time
	effs []effect
}

func (t *step) do(e ...effect) { t.effs = append(t.effs, e...) }

// set moves to state for reason, with detail for people.
func (t *step) set(state domain.State, reason domain.Reason, detail string) {
	if state != t.m.State || reason != t.m.Reason {
		t.m.Since = t.now
	}
	t.m.State, t.m.Reason = state, reason
	if detail != "" || reason == domain.ReasonNone {
		t.m.Detail = detail
	}
}

// announce emits the event the machine's state tells, if the last one
// told (Told) was another; transition calls it once the input is applied,
// so that the states a machine passes through within one step are not
// told (an unlink that gives up goes back to offline, then offline for a
// new reason: one event). What each state tells:
//
//	connected     device.connected
//	connecting    device.disconnected (reason) when it was connected;
//	              else nothing new
//	offline,      device.disconnected (reason); with no reason, only
//	disconnected  when it was connected (else nothing new: a new slot, an
//	              unlink that gave up)
//	logged_out    device.logged_out (reason)
//	pairing,      nothing by themselves: a pairing tells each new code
//	unlinking     (pairingEvent, codeGiven), an unlink its end
func (t *step) announce() {
	connected := t.m.Told.Type == domain.EventDeviceConnected
	var typ domain.EventType
	switch t.m.State {
	case domain.StateConnected:
		typ = domain.EventDeviceConnected
	case domain.StateConnecting:
		if !connected {
			return
		}
		typ = domain.EventDeviceDisconnected
	case domain.StateOffline, domain.StateDisconnected:
		if t.m.Reason == domain.ReasonNone && !connected {
			return
		}
		typ = domain.EventDeviceDisconnected
	case domain.StateLoggedOut:
		typ = domain.EventDeviceLoggedOut
	default:
		return
	}
	reason := t.m.Reason
	if typ == domain.EventDeviceConnected {
		reason = domain.ReasonNone
	}
	if (told{typ, reason}) == t.m.Told {
		return
	}
	t.m.Told = told{typ, reason}
	if typ == domain.EventDeviceConnected {
		id := t.m.Identity
		t.do(emit{typ, domain.ConnectedEventData{JID: id.JID, Phone: id.Phone, PushName: id.PushName, Platform: id.Platform}})
		return
	}
	t.do(emit{typ, domain.ReasonEventData{Reason: reason, Detail: t.m.Detail}})
}

func (t *step) next() uint64 {
	t.m.Seq++
	return t.m.Seq
}

// refuse answers op with ECONFLICT naming the state.
func (t *step) refuse(op uint64, why string) {
	st := string(t.m.State)
	if t.m.Reason != domain.ReasonNone {
		st += " (" + string(t.m.Reason) + ")"
	}
	t.do(reply{Op: op, Err: domain.Errorf(domain.ECONFLICT, "device %s is %s: %s", t.m.ID, st, why)})
}

// answer replies to every waiter of the given kinds (all when none given)
// and forgets them.
func (t *step) answer(r reply, kinds ...waitKind) {
	kept := t.m.Waiters[:0:0]
	for _, w := range t.m.Waiters {
		if len(kinds) > 0 && !hasKind(kinds, w.Kind) {
			kept = append(kept, w)
			continue
		}
		r.Op = w.Op
		t.do(r)
	}
	t.m.Waiters = kept
}

func hasKind(ks []waitKind, k waitKind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func (t *step) wait(op uint64, kind waitKind, phone string) {
	t.m.Waiters = append(t.m.Waiters, waiter{Op: op, Kind: kind, Phone: phone})
}

// closeCurrent closes the current client, if any.
func (t *step) closeCurrent() {
	if t.m.Gen != 0 {
		t.do(closeClient{Gen: t.m.Gen})
	}
	t.m.Gen = 0
	t.m.Online = false
}

// transition is the device lifecycle: see the table at the top of this
// file. now stamps Since and expiries.
func transition(m machine, in input, now time.Time) (machine, []effect) {
	t := &step{m: m, now: now}
	switch in := in.(type) {
	case ping:
		t.do(reply{Op: in.Op, AfterJobs: true})
		return t.m, t.effs
	case created:
		// Whatever happened to the slot since it was made (a racing
		// login), it was made.
		if !t.m.Gone {
			t.do(emit{Type: domain.EventDeviceCreated})
		}
		t.do(reply{Op: in.Op})
		return t.m, t.effs
	case clientEvent:
		if msg, ok := in.Event.(domain.IncomingMessage); ok {
			t.incoming(in.Gen, msg)
			return t.m, t.effs
		}
	}
	if t.m.Gone {
		if op, ok := opOf(in); ok {
			t.do(reply{Op: op, Err: domain.Errorf(domain.ENOTFOUND, "device %s not found", m.ID)})
		}
		return t.m, t.effs
	}
	if t.m.Deleting {
		switch in := in.(type) {
		case slotDeleted:
			t.slotDeleted(in)
		case discarded:
			// The pairing's session went before the slot.
		case cmdShutdown:
			t.shutdown(in.Drop)
		default:
			if op, ok := opOf(in); ok {
				if _, del := in.(cmdDelete); del {
					t.wait(op, waitDelete, "")
				} else {
					t.do(reply{Op: op, Err: domain.Errorf(domain.ENOTFOUND, "device %s is being deleted", m.ID)})
				}
			}
		}
		if !t.m.Gone {
			t.announce() // a delete that failed leaves it logged_out
		}
		return t.m, t.effs
	}
	switch in := in.(type) {
	case start:
		if t.m.JID != "" && t.m.State == domain.StateConnecting {
			t.connectNew()
		}
		// A session found ended at start-up is told by announce below.
	case cmdLogin:
		t.login(in)
	case cmdLogout:
		t.logout(in.Op, false)
	case cmdDelete:
		t.logout(in.Op, true)
	case cmdReconnect:
		t.reconnect(in)
	case cmdShutdown:
		t.shutdown(in.Drop)
	case clientEvent:
		if in.Gen == t.m.Gen && in.Gen != 0 {
			t.event(in)
		}
	case pairingOpened:
		t.pairingOpened(in)
	case codeGiven:
		t.codeGiven(in)
	case promoted:
		t.promoted(in)
	case discarded:
		t.discarded(in)
	case opened:
		t.opened(in)
	case connectFailed:
		t.connectFailed(in)
	case loggedOutDone:
		t.loggedOutDone(in)
	case removed:
		t.removed(in)
	case slotDeleted:
		// Only while Deleting.
	case timerFired:
		t.timerFired(in)
	default:
		panic(fmt.Sprintf("device: unknown input %T", in))
	}
	t.announce()
	return t.m, t.effs
}

// opOf returns the caller of a command input.
func opOf(in input) (uint64, bool) {
	switch in := in.(type) {
	case cmdLogin:
		return in.Op, true
	case cmdLogout:
		return in.Op, true
	case cmdDelete:
		return in.Op, true
	case cmdReconnect:
		return in.Op, true
	}
	return 0, false
}

func kindOf(method domain.PairingMethod) waitKind {
	if method == domain.PairingCode {
		return waitCode
	}
	return waitQR
}
