package device

import (
	"github.com/gowa-dev/gowa/domain"
)

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
