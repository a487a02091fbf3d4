package device

import (
	"context"
	"errors"
	"fmt"

	"github.com/gowa-dev/gowa/domain"
)

// Logout unlinks the device on WhatsApp, so that it disappears from the
// phone's linked devices, and deletes its session; the slot stays. A pairing
// under way is cancelled instead. A device without a session gets
// ECONFLICT; when WhatsApp cannot be reached the session is kept and the
// error is EUNAVAILABLE.
func (s *Service) Logout(ctx context.Context, id string) (domain.Status, error) {
	defer s.syncEvents(ctx)
	d, err := s.acquire(id)
	if err != nil {
		return domain.Status{}, err
	}
	defer d.op.Unlock()
	v := d.snapshot()
	switch {
	case v.pairing != nil:
		d.endPairingLocked(v.pairing, "login cancelled", "failure")
	case !v.loggedIn:
		return domain.Status{}, domain.Errorf(domain.ECONFLICT, "device %s is not logged in", id)
	default:
		ctx, cancel := s.unlinkContext(ctx)
		defer cancel()
		if err := d.unlinkLocked(ctx); err != nil {
			return domain.Status{}, err
		}
	}
	return d.status(), nil
}

// Reconnect closes the device's connection and connects again with its
// stored session.
func (s *Service) Reconnect(ctx context.Context, id string) (domain.Status, error) {
	defer s.syncEvents(ctx)
	d, err := s.acquire(id)
	if err != nil {
		return domain.Status{}, err
	}
	defer d.op.Unlock()
	v := d.snapshot()
	switch {
	case v.pairing != nil:
		return domain.Status{}, domain.Errorf(domain.ECONFLICT, "device %s is pairing; finish or cancel the login first", id)
	case !v.loggedIn:
		return domain.Status{}, domain.Errorf(domain.ECONFLICT, "device %s is not logged in", id)
	}
	if v.state == domain.StateConnected {
		d.emitReason(domain.EventDeviceDisconnected, domain.ReasonReconnect, "")
	}
	d.closeClientLocked()
	d.connectLocked(s.cfg.Sessions.Path(v.jid))
	return d.status(), nil
}

// connectLocked opens the linked session at path and connects it. Failures
// are recorded in the device's state. d.op must be held.
func (d *device) connectLocked(path string) {
	c, _, err := d.open(path)
	if err != nil {
		if d.goneErr() != nil {
			return
		}
		d.svc.log.Error("opening session", "device_id", d.id, "err", err)
		d.setState(domain.StateDisconnected, "could not open the stored session")
		d.emitReason(domain.EventDeviceDisconnected, domain.ReasonConnectError, "could not open the stored session")
		return
	}
	if _, ok := c.Identity(); !ok {
		// WhatsApp logged the device out and whatsmeow emptied the
		// database before the folder could be deleted (a crash in between).
		d.dropSessionLocked(d.ctx, domain.StateLoggedOut, "the stored session was no longer linked")
		d.emitReason(domain.EventDeviceLoggedOut, domain.ReasonSessionGone, "the stored session was no longer linked")
		return
	}
	d.setState(domain.StateConnecting, "")
	if err := c.Connect(d.ctx); err != nil {
		d.svc.log.Warn("connecting", "device_id", d.id, "err", err)
		d.setState(domain.StateDisconnected, "could not connect to WhatsApp")
		d.emitReason(domain.EventDeviceDisconnected, domain.ReasonConnectError, "could not connect to WhatsApp")
	}
}

// unlinkLocked logs the device out on WhatsApp and deletes its session,
// connecting first if it is offline. ctx comes from Service.unlinkContext.
// d.op must be held.
func (d *device) unlinkLocked(ctx context.Context) error {
	v := d.snapshot()
	if v.state != domain.StateConnected {
		if v.client == nil || v.state != domain.StateConnecting {
			d.closeClientLocked()
			d.connectLocked(d.svc.cfg.Sessions.Path(v.jid))
		}
		wctx, cancel := context.WithTimeout(ctx, d.svc.cfg.UnlinkWait)
		v, err := d.waitFor(wctx, func(v view) bool {
			return v.state == domain.StateConnected || v.state == domain.StateLoggedOut || !v.loggedIn
		})
		cancel()
		switch {
		case errors.Is(err, errShutdown):
			return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
		case err != nil:
			// ctx is the caller's unlinkContext, which only its own
			// deadline ends: either way WhatsApp was not reached in time.
			return domain.Errorf(domain.EUNAVAILABLE, "WhatsApp could not be reached to unlink device %s; the session is kept", d.id)
		case v.state == domain.StateLoggedOut || !v.loggedIn:
			// Already unlinked from the phone; only the local part is left.
			d.dropSessionLocked(ctx, domain.StateDisconnected, "")
			d.emitReason(domain.EventDeviceLoggedOut, domain.ReasonLogout, "")
			return nil
		}
	}
	c := d.snapshot().client
	if err := c.Logout(ctx); err != nil {
		switch domain.ErrorCode(err) {
		case domain.ECONFLICT:
		case domain.EINTERNAL:
			return err // a fault here, not WhatsApp's
		default:
			return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp did not confirm the logout; the session is kept")
		}
		d.svc.log.Warn("logout found no session on WhatsApp; deleting it here", "device_id", d.id, "err", err)
	}
	d.dropSessionLocked(ctx, domain.StateDisconnected, "")
	d.emitReason(domain.EventDeviceLoggedOut, domain.ReasonLogout, "")
	d.svc.log.Info("device logged out", "device_id", d.id)
	return nil
}

// dropSessionLocked closes the client, deletes the session folder and
// forgets the JID, ending in state with reason. It is safe to call twice.
// d.op must be held.
func (d *device) dropSessionLocked(ctx context.Context, state domain.State, reason string) {
	d.closeClientLocked()
	d.mu.Lock()
	jid := d.jid
	d.mu.Unlock()
	if jid != "" {
		if err := d.svc.cfg.Sessions.Delete(jid); err != nil {
			d.svc.log.Error("deleting session files", "device_id", d.id, "err", err)
		}
		if err := d.svc.cfg.Registry.Put(context.WithoutCancel(ctx), domain.Slot{ID: d.id, CreatedAt: d.createdAt}); err != nil {
			d.svc.log.Error("clearing the session in the registry", "device_id", d.id, "err", err)
		}
	}
	d.mu.Lock()
	d.jid = ""
	d.identity = domain.Identity{}
	d.setStateLocked(state, reason)
	d.mu.Unlock()
}

// eventLoop applies the client's events to the device, in order, until the
// device stops.
func (d *device) eventLoop() {
	for {
		it, ok := d.queue.pop()
		if !ok {
			return
		}
		d.handle(it.gen, it.ev)
	}
}

func (d *device) currentGen() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen
}

// withOp runs fn under d.op if the client that sent an event is still the
// device's client when the lock is won.
func (d *device) withOp(gen uint64, fn func()) {
	d.op.Lock()
	defer d.op.Unlock()
	if d.currentGen() == gen {
		fn()
	}
}

// ifCurrent runs fn under d.mu if the client that sent an event is still
// the device's client. Checking under the same lock as the update keeps a
// client closed in between from changing the state of its successor.
func (d *device) ifCurrent(gen uint64, fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.gen == gen {
		fn()
	}
}

func (d *device) handle(gen uint64, ev domain.Event) {
	if m, ok := ev.(domain.IncomingMessage); ok && m.Done != nil {
		defer m.Done()
	}
	if d.currentGen() != gen {
		return // from a client that has been closed since
	}
	log := d.svc.log.With("device_id", d.id)
	switch ev := ev.(type) {
	case domain.QRCode:
		d.ifCurrent(gen, func() { d.onQRCodeLocked(ev) })
	case domain.Paired:
		d.withOp(gen, func() { d.onPairedLocked(ev) })
	case domain.PairingExpired:
		log.Info("QR pairing expired unscanned")
		d.withOp(gen, func() {
			if p := d.snapshot().pairing; p != nil {
				d.endPairingLocked(p, "the QR code expired without being scanned", "expired")
			}
		})
	case domain.PairingFailed:
		log.Warn("pairing failed", "reason", ev.Reason)
		d.withOp(gen, func() {
			if p := d.snapshot().pairing; p != nil {
				d.endPairingLocked(p, "pairing failed: "+ev.Reason, "failure")
			}
		})
	case domain.Connected:
		d.ifCurrent(gen, d.onConnectedLocked)
		log.Info("device connected")
	case domain.Disconnected:
		d.ifCurrent(gen, func() {
			if d.jid != "" && (d.state == domain.StateConnected || d.state == domain.StateConnecting) {
				if d.state == domain.StateConnected {
					d.emitReason(domain.EventDeviceDisconnected, domain.ReasonConnectionLost, "")
				}
				d.setStateLocked(domain.StateConnecting, "connection lost; reconnecting")
			}
		})
	case domain.LoggedOut:
		log.Warn("device logged out by the phone or WhatsApp", "reason", ev.Reason)
		reason := "logged out from the phone or by WhatsApp"
		if ev.Reason != "" {
			reason += " (" + ev.Reason + ")"
		}
		// The state changes only together with the session's removal, so
		// that nobody sees logged_out while logged_in is still true.
		d.withOp(gen, func() {
			d.dropSessionLocked(d.ctx, domain.StateLoggedOut, reason)
			d.emitReason(domain.EventDeviceLoggedOut, domain.ReasonRemovedOnPhone, ev.Reason)
		})
	case domain.StreamReplaced:
		log.Warn("stream replaced: another connection uses this session; staying offline")
		d.ifCurrent(gen, func() {
			d.setStateLocked(domain.StateDisconnected, "stream replaced: another connection took over this session")
			d.emitReason(domain.EventDeviceDisconnected, domain.ReasonStreamReplaced, "")
		})
		d.withOp(gen, func() {
			if c := d.snapshot().client; c != nil {
				c.Disconnect()
			}
		})
	case domain.TemporaryBan:
		log.Warn("device temporarily banned", "code", ev.Code, "expire", ev.Expire)
		d.ifCurrent(gen, func() {
			d.setStateLocked(domain.StateDisconnected, fmt.Sprintf("temporarily banned by WhatsApp (code %d) for %s", ev.Code, ev.Expire))
			d.emitReason(domain.EventDeviceDisconnected, domain.ReasonTemporaryBan, d.lastError)
		})
	case domain.ClientOutdated:
		log.Error("WhatsApp says this client version is outdated")
		d.ifCurrent(gen, func() {
			d.setStateLocked(domain.StateDisconnected, "WhatsApp says this client version is outdated")
			d.emitReason(domain.EventDeviceDisconnected, domain.ReasonClientOutdated, "")
		})
	case domain.ConnectFailure:
		log.Warn("WhatsApp refused the connection", "reason", ev.Reason)
		d.ifCurrent(gen, func() {
			d.setStateLocked(domain.StateDisconnected, "WhatsApp refused the connection: "+ev.Reason)
			d.emitReason(domain.EventDeviceDisconnected, domain.ReasonConnectFailure, ev.Reason)
		})
	case domain.IncomingMessage:
		d.emit(domain.EventMessageReceived, ev.Message)
		if ev.Done != nil {
			d.svc.syncEvents(d.ctx)
		}
	case domain.PushNameChanged:
		d.ifCurrent(gen, func() {
			d.identity.PushName = ev.PushName
			d.setStateLocked(d.state, "") // wake status watchers
		})
	}
}

// onConnectedLocked records that the device is online. d.mu must be held.
func (d *device) onConnectedLocked() {
	if d.jid == "" || d.client == nil {
		return
	}
	if id, ok := d.client.Identity(); ok {
		d.identity = id
	}
	d.setStateLocked(domain.StateConnected, "")
	d.emitConnected(d.identity)
}
