package device

import (
	"cmp"
	"errors"
	"fmt"

	"github.com/gowa-dev/gowa/domain"
)

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
// drop: the device moves to another replica, rather than the server
// closing; its callers are told to try again.
func (t *step) shutdown(drop bool) {
	t.answer(reply{Err: stoppedError(t.m.ID, drop)})
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
