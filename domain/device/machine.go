package device

import (
	"cmp"
	"errors"
	"fmt"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// A device's lifecycle is the pure function transition: given the
// device's machine (its state as data) and one input (an API command, an
// event of its WhatsApp client, the result of a blocking job, a timer), it
// returns the next machine and the effects to carry out. It does no I/O and
// reads no clock: the device's owner goroutine (owner.go) feeds it inputs
// one at a time, carries out the effects off the owner, and feeds their
// results back as inputs. transition_test.go checks every (state, input)
// pair.
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
//	offline       logout, delete → unlinking; reconnect → connecting
//	unlinking     connected → log out on WhatsApp; logged out, logout done →
//	              remove files → logged_out; deadline or WhatsApp unreachable
//	              → back (connecting, connected, offline), or for a delete
//	              the slot goes anyway with a warning
//	logged_out    login → pairing; logout (removes files left behind, else
//	              nothing to do); delete
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
	// cmdShutdown: the service is closing; the session stays.
	cmdShutdown struct{}
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
			t.shutdown()
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
		t.shutdown()
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

// ---- pairing ----

func (t *step) login(in cmdLogin) {
	switch t.m.State {
	case domain.StateDisconnected:
		t.startPairing(in)
	case domain.StateLoggedOut:
		if t.m.JID != "" {
			t.refuse(in.Op, "the files of its ended session are still on disk; log out to remove them first")
			return
		}
		t.startPairing(in)
	case domain.StatePairing:
		t.joinPairing(in)
	case domain.StateUnlinking:
		t.refuse(in.Op, "its session is ending; log in once it is logged_out")
	default:
		t.refuse(in.Op, "already logged in; log out first")
	}
}

func (t *step) startPairing(in cmdLogin) {
	gen := t.next()
	t.m.Gen, t.m.Online = gen, false
	t.m.Pair = pairing{Method: in.Method, Started: t.now, ForCode: in.Method == domain.PairingCode}
	if in.Method == domain.PairingCode {
		t.m.Pair.Phone = in.Phone
	}
	t.set(domain.StatePairing, domain.ReasonNone, "")
	t.wait(in.Op, kindOf(in.Method), in.Phone)
	t.do(openPairing{Gen: gen})
}

func (t *step) joinPairing(in cmdLogin) {
	p := &t.m.Pair
	switch {
	case p.Promoting:
		t.refuse(in.Op, "the phone linked it and the session is being saved; retry in a moment")
		return
	case p.Ending:
		// The pairing is being torn down: a fresh one starts once it is.
		t.wait(in.Op, kindOf(in.Method), in.Phone)
		return
	}
	if in.Method == domain.PairingQR {
		if p.QR != "" {
			t.do(reply{Op: in.Op, QR: p.QR, Expires: p.ExpiresAt})
			return
		}
		t.wait(in.Op, waitQR, "")
		return
	}
	switch {
	case p.Code != "" && !t.now.Before(p.ExpiresAt):
		// The code can no longer be entered: start afresh once this
		// pairing is gone, rather than refuse.
		t.wait(in.Op, waitCode, in.Phone)
		t.endPairing(domain.ReasonPairingExpired, "the pairing code expired", "expired")
	case p.Code != "" && p.Phone == in.Phone:
		t.do(reply{Op: in.Op, Code: p.Code, Expires: p.ExpiresAt})
	case p.Code != "" || (p.Phone != "" && p.Phone != in.Phone):
		t.refuse(in.Op, "a pairing code for another phone is being entered; wait until it expires")
	default:
		p.Phone = in.Phone
		t.wait(in.Op, waitCode, in.Phone)
		if p.Opened && !p.Asking {
			p.Asking = true
			t.do(askCode{Gen: t.m.Gen, Phone: in.Phone})
		}
	}
}

func (t *step) pairingOpened(in pairingOpened) {
	switch {
	case in.Gen != t.m.Gen:
		// Cancelled while it opened: the client closes itself (closeClient
		// found none to close), its session is left to discard.
		t.do(closeClient{Gen: in.Gen})
		if in.Key != "" {
			t.do(discard{Key: in.Key})
		}
		return
	case t.m.State != domain.StatePairing:
		return
	case t.m.Pair.Ending:
		// Ending before the session was known: discard it too.
		if in.Key != "" && t.m.Pair.Key == "" {
			t.do(discard{Key: in.Key})
		}
		return
	}
	p := &t.m.Pair
	p.Key = in.Key
	if in.Err != nil && !p.Ending {
		t.failPairing(in.Err, domain.ReasonPairingFailed, "could not start pairing", "failure")
		return
	}
	p.Opened = true
	if p.Phone != "" && !p.Asking {
		p.Asking = true
		t.do(askCode{Gen: t.m.Gen, Phone: p.Phone})
	}
}

func (t *step) codeGiven(in codeGiven) {
	p := &t.m.Pair
	if in.Gen != t.m.Gen || t.m.State != domain.StatePairing || p.Ending || p.Promoting || !p.Asking {
		return
	}
	p.Asking = false
	if in.Err != nil {
		err := codeError(in.Err)
		if !p.ForCode && domain.ErrorCode(err) == domain.EINVALID {
			// A bad number does not end the QR pairing it joined.
			p.Phone = ""
			t.answer(reply{Err: err}, waitCode)
			return
		}
		t.failPairing(err, domain.ReasonPairingFailed, "pairing code request failed", "failure")
		return
	}
	p.Method, p.Code, p.Phone, p.ExpiresAt = domain.PairingCode, in.Code, in.Phone, in.ExpiresAt
	t.m.Since = t.now // a new code is news to watchers
	t.do(emit{domain.EventDevicePairing, domain.PairingEventData{Method: domain.PairingCode, ExpiresAt: p.ExpiresAt}})
	t.answer(reply{Code: p.Code, Expires: p.ExpiresAt}, waitCode)
}

func codeError(err error) error {
	if domain.ErrorCode(err) == domain.EINTERNAL {
		return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp did not give a pairing code")
	}
	return err
}

// failPairing ends the pairing, telling every login waiting for it err
// once it is gone.
func (t *step) failPairing(err error, reason domain.Reason, detail, outcome string) {
	for i, w := range t.m.Waiters {
		if w.Kind == waitQR || w.Kind == waitCode {
			t.m.Waiters[i].Kind, t.m.Waiters[i].Err = waitEnded, err
		}
	}
	t.endPairing(reason, detail, outcome)
}

// endPairing closes the pairing's client and discards its session; the
// state becomes disconnected once that is done (discarded), so that whoever
// sees disconnected also finds the temporary session gone.
func (t *step) endPairing(reason domain.Reason, detail, outcome string) {
	p := &t.m.Pair
	gen := t.m.Gen
	t.closeCurrent()
	t.m.Gen = gen // discarded{gen} ends it
	p.Ending, p.EndReason, p.EndDetail = true, reason, detail
	t.do(discard{Gen: gen, Key: p.Key}, observeLogin{Method: p.Method, Outcome: outcome})
}

func (t *step) discarded(in discarded) {
	if t.m.State != domain.StatePairing || !t.m.Pair.Ending || in.Gen != t.m.Gen {
		return
	}
	p := t.m.Pair
	t.m.Pair = pairing{}
	t.m.Gen = 0
	t.set(domain.StateDisconnected, p.EndReason, p.EndDetail)
	t.announce() // told even when a waiting login pairs again at once
	// Those who asked for a logout (a cancel) are done, the logins of the
	// pairing told why it ended; a login that came while it ended starts
	// the next one.
	t.answer(reply{}, waitLogout)
	for _, w := range t.m.Waiters {
		if w.Kind == waitEnded {
			t.do(reply{Op: w.Op, Err: w.Err})
		}
	}
	var again []waiter
	for _, w := range t.m.Waiters {
		if w.Kind == waitQR || w.Kind == waitCode {
			again = append(again, w)
		}
	}
	t.m.Waiters = nil
	if len(again) == 0 {
		return
	}
	first := again[0]
	method := domain.PairingQR
	if first.Kind == waitCode {
		method = domain.PairingCode
	}
	t.startPairing(cmdLogin{Op: first.Op, Method: method, Phone: first.Phone})
	for _, w := range again[1:] {
		t.m.Waiters = append(t.m.Waiters, w)
	}
	if t.m.Pair.Phone == "" {
		for _, w := range again {
			if w.Kind == waitCode {
				t.m.Pair.Phone = w.Phone
				break
			}
		}
	}
}

func (t *step) pairingEvent(ev domain.Event) {
	p := &t.m.Pair
	if p.Ending || p.Promoting {
		return
	}
	switch ev := ev.(type) {
	case domain.QRCode:
		p.QR = ev.Code
		if p.Method == domain.PairingQR {
			p.ExpiresAt = t.now.Add(ev.Timeout)
			t.do(emit{domain.EventDevicePairing, domain.PairingEventData{Method: domain.PairingQR, ExpiresAt: p.ExpiresAt}})
		}
		t.m.Since = t.now
		t.answer(reply{QR: p.QR, Expires: p.ExpiresAt}, waitQR)
	case domain.Paired:
		p.Promoting, p.Identity = true, ev.Identity
		gen := t.m.Gen
		t.m.Gen = gen // promoted{gen} ends it; the client is closed by promote
		t.do(promote{Gen: gen, Key: p.Key, Identity: ev.Identity})
	case domain.PairingExpired:
		t.failPairing(domain.Errorf(domain.ECONFLICT, "pairing of device %s ended: the QR code expired without being scanned", t.m.ID),
			domain.ReasonPairingExpired, "the QR code expired without being scanned", "expired")
	case domain.PairingFailed:
		t.failPairing(domain.Errorf(domain.ECONFLICT, "pairing of device %s failed: %s", t.m.ID, ev.Reason),
			domain.ReasonPairingFailed, "pairing failed: "+ev.Reason, "failure")
	}
}

func (t *step) promoted(in promoted) {
	p := t.m.Pair
	if t.m.State != domain.StatePairing || !p.Promoting || in.Gen != t.m.Gen {
		return
	}
	if in.Err != nil {
		t.m.Pair.Promoting = false
		t.failPairing(domain.Wrap(domain.EINTERNAL, in.Err, "save the paired session"),
			domain.ReasonPairingFailed, "could not save the paired session", "failure")
		return
	}
	t.m.Gen, t.m.Pair = 0, pairing{}
	t.m.JID, t.m.Identity = p.Identity.JID, p.Identity
	t.answer(reply{Err: domain.Errorf(domain.ECONFLICT, "device %s was linked before this login got a code", t.m.ID)}, waitQR, waitCode)
	t.answer(reply{}, waitLogout) // a cancel that came too late finds it linked
	t.do(observeLogin{Method: p.Method, Outcome: "success"})
	t.set(domain.StateConnecting, domain.ReasonNone, "")
	t.connectNew()
}

// ---- sessions ----

// connectNew opens the session again on a new client and connects it.
func (t *step) connectNew() {
	t.closeCurrent()
	gen := t.next()
	t.m.Gen = gen
	t.do(connect{Gen: gen, JID: t.m.JID})
}

func (t *step) opened(in opened) {
	if in.Gen != t.m.Gen {
		t.do(closeClient{Gen: in.Gen})
		return
	}
	if t.m.State != domain.StateConnecting && !(t.m.State == domain.StateUnlinking && t.m.Unlink.Phase == unlinkWaitOnline) {
		return
	}
	switch {
	case in.Err != nil:
		t.closeCurrent()
		t.sessionEnded(domain.ReasonSessionUnreadable, "the stored session cannot be read: "+in.Err.Error(), false)
	case !in.Linked:
		// WhatsApp logged the device out and the client emptied the
		// database before the folder could be deleted (a crash between).
		t.closeCurrent()
		t.sessionEnded(domain.ReasonSessionEmpty, "the stored session was no longer linked", true)
	}
}

func (t *step) connectFailed(in connectFailed) {
	if in.Gen == 0 || in.Gen != t.m.Gen || (t.m.State != domain.StateConnecting && t.m.State != domain.StateConnected && t.m.State != domain.StateUnlinking) {
		return
	}
	detail := "could not connect to WhatsApp"
	if in.Err != nil {
		detail += ": " + domain.ErrorMessage(in.Err)
	}
	t.goOffline(domain.ReasonConnectFailed, detail)
}

// goOffline stops the client retrying and moves to offline; an unlink
// waiting for the connection gives up.
func (t *step) goOffline(reason domain.Reason, detail string) {
	if t.m.State == domain.StateUnlinking {
		if t.m.Unlink.Phase == unlinkRemoving {
			return
		}
		t.unlinkUnreachable(domain.Errorf(domain.EUNAVAILABLE, "WhatsApp could not be reached to unlink device %s (%s); the session is kept", t.m.ID, detail), domain.StateOffline)
		if t.m.State != domain.StateOffline {
			return
		}
	}
	t.m.Online = false
	if t.m.Gen != 0 {
		t.do(disconnect{Gen: t.m.Gen})
	}
	t.set(domain.StateOffline, reason, detail)
}

// sessionEnded handles a session WhatsApp ended, or that cannot be used:
// remove its files now when drop, else record the reason and keep the
// files until a logout or delete.
func (t *step) sessionEnded(reason domain.Reason, detail string, drop bool) {
	if t.m.State == domain.StateUnlinking {
		// The caller's reason stands (a LoggedOut event has set its own).
		t.m.Unlink.Phase = unlinkRemoving
		t.closeCurrent()
		t.removeFiles()
		return
	}
	t.closeCurrent()
	t.do(warn{Msg: "session ended: " + detail})
	if !drop {
		t.set(domain.StateLoggedOut, reason, detail)
		t.do(save{})
		return
	}
	t.m.Unlink = unlink{Phase: unlinkRemoving, Reason: reason, From: t.m.State}
	t.set(domain.StateUnlinking, reason, detail)
	t.removeFiles()
}

// removeFiles starts removing the session's files (and the slot, for a
// delete).
func (t *step) removeFiles() {
	if t.m.Unlink.Delete {
		t.m.Deleting = true
		t.do(deleteSlot{JID: t.m.JID, Reason: t.m.Unlink.Reason})
		return
	}
	t.do(remove{JID: t.m.JID, Reason: t.m.Unlink.Reason})
}

func (t *step) event(in clientEvent) {
	if t.m.State == domain.StatePairing {
		t.pairingEvent(in.Event)
		return
	}
	switch ev := in.Event.(type) {
	case domain.Connected:
		t.m.Online = true
		if in.Identity.JID != "" {
			t.m.Identity = in.Identity
		}
		switch t.m.State {
		case domain.StateConnecting:
			t.set(domain.StateConnected, domain.ReasonNone, "")
		case domain.StateUnlinking:
			if t.m.Unlink.Phase == unlinkWaitOnline {
				t.m.Unlink.Phase = unlinkLoggingOut
				t.do(logout{Gen: t.m.Gen})
			}
		}
	case domain.Disconnected:
		t.m.Online = false
		if t.m.State == domain.StateConnected {
			t.set(domain.StateConnecting, domain.ReasonConnectionLost, "connection lost; reconnecting")
		}
	case domain.LoggedOut:
		detail := "logged out from the phone or by WhatsApp"
		if ev.Detail != "" {
			detail += " (" + ev.Detail + ")"
		}
		reason := ev.Reason
		if reason == domain.ReasonNone {
			reason = domain.ReasonLoggedOutOther
		}
		if t.m.State == domain.StateUnlinking && t.m.Unlink.Phase == unlinkRemoving {
			return
		}
		if t.m.State == domain.StateUnlinking {
			t.m.Unlink.Reason = reason
			t.m.Detail = detail
		}
		t.sessionEnded(reason, detail, true)
	case domain.Offline:
		if t.m.State == domain.StateConnected || t.m.State == domain.StateConnecting || t.m.State == domain.StateUnlinking {
			detail := ev.Detail
			if detail == "" {
				detail = string(ev.Reason)
			}
			t.goOffline(ev.Reason, detail)
		}
	case domain.PushNameChanged:
		t.m.Identity.PushName = ev.PushName
	}
}

// incoming tells of a message the client Gen received, when it is the
// current client, and has it acknowledged once that is written. A stale
// client's message is acknowledged without being told: that client is
// closed, so its acknowledgement goes nowhere and WhatsApp sends the
// message again to the next connection.
func (t *step) incoming(gen uint64, msg domain.IncomingMessage) {
	if gen != 0 && gen == t.m.Gen && !t.m.Gone {
		t.do(emit{domain.EventMessageReceived, msg.Message})
	}
	if msg.Done != nil {
		t.do(ackWritten{msg.Done})
	}
}

func (t *step) reconnect(in cmdReconnect) {
	switch t.m.State {
	case domain.StateConnecting, domain.StateConnected, domain.StateOffline:
		t.set(domain.StateConnecting, domain.ReasonNone, "")
		t.connectNew()
		t.do(reply{Op: in.Op})
	case domain.StatePairing:
		t.refuse(in.Op, "finish or cancel the login first")
	case domain.StateUnlinking:
		t.refuse(in.Op, "its session is ending")
	default:
		t.refuse(in.Op, "not logged in")
	}
}

// ---- unlinking ----

// logout starts a logout (or a delete, which also removes the slot).
func (t *step) logout(op uint64, del bool) {
	kind := waitLogout
	if del {
		kind = waitDelete
	}
	switch t.m.State {
	case domain.StateDisconnected:
		if !del {
			t.refuse(op, "not logged in")
			return
		}
		t.m.Deleting = true
		t.wait(op, kind, "")
		t.do(deleteSlot{})
	case domain.StateLoggedOut:
		switch {
		case del:
			t.m.Deleting = true
			t.wait(op, kind, "")
			t.do(deleteSlot{JID: t.m.JID, Reason: t.m.Reason})
		case t.m.JID == "":
			t.do(reply{Op: op}) // nothing left to do: a logout is idempotent
		default:
			// The files of the ended session are left: remove them.
			t.m.Unlink = unlink{Phase: unlinkRemoving, Reason: t.m.Reason, From: t.m.State}
			t.wait(op, kind, "")
			t.set(domain.StateUnlinking, t.m.Reason, t.m.Detail)
			t.removeFiles()
		}
	case domain.StatePairing:
		p := &t.m.Pair
		if p.Promoting {
			t.refuse(op, "the phone linked it and the session is being saved; retry in a moment")
			return
		}
		if del {
			t.answer(reply{Err: domain.Errorf(domain.ENOTFOUND, "device %s was deleted", t.m.ID)}, waitQR, waitCode)
			t.wait(op, kind, "")
			if !p.Ending {
				t.endPairing(domain.ReasonPairingCancelled, "device deleted", "failure")
			}
			t.m.Deleting = true
			t.do(deleteSlot{})
			return
		}
		t.wait(op, kind, "")
		if !p.Ending {
			t.failPairing(domain.Errorf(domain.ECONFLICT, "the login of device %s was cancelled", t.m.ID),
				domain.ReasonPairingCancelled, "login cancelled", "failure")
		}
	case domain.StateUnlinking:
		t.wait(op, kind, "")
		if del && !t.m.Unlink.Delete {
			t.m.Unlink.Delete = true
		}
	default: // connecting, connected, offline
		from := t.m.State
		t.wait(op, kind, "")
		t.m.Unlink = unlink{Reason: domain.ReasonLogout, Delete: del, From: from}
		t.set(domain.StateUnlinking, domain.ReasonLogout, "")
		switch {
		case from == domain.StateConnected && t.m.Online:
			t.m.Unlink.Phase = unlinkLoggingOut
			t.do(logout{Gen: t.m.Gen})
			return
		case from == domain.StateOffline || t.m.Gen == 0:
			t.connectNew()
		}
		t.m.Unlink.Phase = unlinkWaitOnline
		t.m.Unlink.Timer = t.next()
		t.do(startTimer{Seq: t.m.Unlink.Timer})
	}
}

func (t *step) timerFired(in timerFired) {
	if t.m.State != domain.StateUnlinking || t.m.Unlink.Phase != unlinkWaitOnline || in.Seq != t.m.Unlink.Timer {
		return
	}
	back := domain.StateConnecting
	t.unlinkUnreachable(domain.Errorf(domain.EUNAVAILABLE, "WhatsApp could not be reached to unlink device %s; the session is kept", t.m.ID), back)
}

// unlinkUnreachable ends an unlink that could not reach WhatsApp: a delete
// goes on without it (with a warning), a logout fails with err and the
// device goes back to state back.
func (t *step) unlinkUnreachable(err error, back domain.State) {
	if t.m.Unlink.Delete {
		t.m.Unlink.Warning = "WhatsApp could not be reached, so the phone may still list this device"
		t.do(warn{Msg: "device deleted without unlinking it on WhatsApp"})
		t.m.Unlink.Phase = unlinkRemoving
		t.closeCurrent()
		t.removeFiles()
		return
	}
	t.answer(reply{Err: err}, waitLogout)
	if back == domain.StateConnecting && t.m.Online {
		back = domain.StateConnected
	}
	t.m.Unlink = unlink{}
	t.set(back, domain.ReasonNone, "")
}

func (t *step) loggedOutDone(in loggedOutDone) {
	if in.Gen != t.m.Gen || t.m.State != domain.StateUnlinking || t.m.Unlink.Phase != unlinkLoggingOut {
		return
	}
	if in.Err != nil {
		switch domain.ErrorCode(in.Err) {
		case domain.ECONFLICT:
			// WhatsApp knows no such device: nothing left but the local part.
			t.do(warn{Msg: "logout found no session on WhatsApp; deleting it here"})
		case domain.EINTERNAL:
			t.unlinkUnreachable(in.Err, domain.StateConnecting) // a fault here, not WhatsApp's
			return
		default:
			t.unlinkUnreachable(domain.Wrap(domain.EUNAVAILABLE, in.Err, "WhatsApp did not confirm the logout; the session is kept"), domain.StateConnecting)
			return
		}
	}
	t.m.Unlink.Phase = unlinkRemoving
	t.closeCurrent()
	t.removeFiles()
}

func (t *step) removed(in removed) {
	if t.m.State != domain.StateUnlinking || t.m.Unlink.Phase != unlinkRemoving {
		return
	}
	u := t.m.Unlink
	t.m.Unlink = unlink{}
	if in.Err != nil {
		err := domain.Wrap(domain.EUNAVAILABLE, in.Err, fmt.Sprintf("the session of device %s ended, but its files could not be removed (%s); the device stays logged out with them; fix the storage and log out again", t.m.ID, rootCause(in.Err)))
		t.set(domain.StateLoggedOut, u.Reason, "the session files could not be removed: "+rootCause(in.Err))
		if !in.At.IsZero() {
			t.m.Since = in.At
		}
		t.answer(reply{Err: err})
		return
	}
	t.m.JID, t.m.Identity = "", domain.Identity{}
	detail := t.m.Detail
	if u.Reason == domain.ReasonLogout {
		detail = ""
	}
	t.set(domain.StateLoggedOut, u.Reason, detail)
	if !in.At.IsZero() {
		t.m.Since = in.At // as the registry has it, so that a restart keeps it
	}
	t.answer(reply{})
}

func (t *step) slotDeleted(in slotDeleted) {
	u := t.m.Unlink
	if in.Err == nil {
		if t.m.JID != "" && t.m.Told.Type != domain.EventDeviceLoggedOut {
			// Its session ended with it: unlinked, or (with a warning) not.
			reason := cmp.Or(u.Reason, t.m.Reason, domain.ReasonLogout)
			t.do(emit{domain.EventDeviceLoggedOut, domain.ReasonEventData{Reason: reason, Detail: u.Warning}})
		}
		t.do(emit{Type: domain.EventDeviceDeleted})
		// stop first: the slot leaves the service before anyone is told.
		t.m.Gone = true
		t.do(stop{})
		t.answer(reply{Warning: u.Warning})
		return
	}
	t.m.Deleting = false
	err := domain.Wrap(domain.EUNAVAILABLE, in.Err, fmt.Sprintf("device %s could not be deleted (%s); it is kept", t.m.ID, rootCause(in.Err)))
	t.answer(reply{Err: err})
	switch {
	case t.m.State == domain.StateUnlinking || (t.m.State == domain.StateLoggedOut && t.m.JID != ""):
		t.m.Unlink = unlink{}
		if in.FilesGone {
			t.m.JID, t.m.Identity = "", domain.Identity{}
		}
		reason := u.Reason
		if reason == domain.ReasonNone {
			reason = t.m.Reason
		}
		t.set(domain.StateLoggedOut, reason, "the device could not be deleted: "+rootCause(in.Err))
	case t.m.State == domain.StatePairing:
		// endPairing's discarded arrived while deleting, and was dropped.
		t.m.Pair, t.m.Gen = pairing{}, 0
		t.set(domain.StateDisconnected, domain.ReasonPairingCancelled, "device deletion failed")
	}
}

// rootCause is the innermost error's text: what failed, without the layers.
func rootCause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			return err.Error()
		}
		err = next
	}
}

// shutdown closes the client and discards a pairing; the session stays.
func (t *step) shutdown() {
	t.answer(reply{Err: domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")})
	if t.m.State == domain.StatePairing && t.m.Pair.Key != "" && !t.m.Pair.Promoting {
		gen := t.m.Gen
		t.closeCurrent()
		t.do(discard{Gen: gen, Key: t.m.Pair.Key})
	} else {
		t.closeCurrent()
	}
	t.m.Gone = true
	t.do(stop{})
}
