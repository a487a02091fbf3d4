package device

import (
	"context"
	"errors"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// QR is the QR code a login shows.
type QR struct {
	Text      string
	ExpiresAt time.Time
}

// PairingCode is the code a login by phone number shows.
type PairingCode struct {
	Code      string
	ExpiresAt time.Time
}

// LoginQR starts QR pairing for device id, creating the slot if needed, and
// returns the QR code currently shown. While a pairing is under way it
// returns the current code and never opens another connection. A device
// that is logged in gets ECONFLICT.
func (s *Service) LoginQR(ctx context.Context, id string) (QR, error) {
	defer s.syncEvents(ctx)
	d, _, err := s.getOrCreate(ctx, id)
	if err != nil {
		return QR{}, err
	}
	p, err := d.startPairing(ctx, domain.PairingQR)
	if err != nil {
		return QR{}, err
	}
	if err := d.awaitFirstQR(ctx, p); err != nil {
		return QR{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pairing != p || p.QR == "" {
		return QR{}, domain.Errorf(domain.ECONFLICT, "pairing of device %s ended: %s", id, d.lastError)
	}
	return QR{Text: p.QR, ExpiresAt: p.ExpiresAt}, nil
}

// LoginCode asks WhatsApp for a pairing code for phone on device id,
// creating the slot if needed. A repeated call for the same phone while the
// code is valid returns the same code; a QR pairing under way is reused.
func (s *Service) LoginCode(ctx context.Context, id, phone string) (PairingCode, error) {
	defer s.syncEvents(ctx)
	digits, err := domain.NormalizePhone(phone)
	if err != nil {
		return PairingCode{}, err
	}
	d, _, err := s.getOrCreate(ctx, id)
	if err != nil {
		return PairingCode{}, err
	}
	d.op.Lock()
	defer d.op.Unlock()
	v := d.snapshot()
	now := s.cfg.Clock.Now()
	if p := v.pairing; p != nil && p.Method == domain.PairingCode {
		switch {
		case !now.Before(p.ExpiresAt):
			// The code can no longer be entered; WhatsApp's own timeout
			// will follow. Start afresh rather than refuse.
			d.endPairingLocked(p, "the pairing code expired", "expired")
		case p.phone == digits:
			return PairingCode{Code: p.Code, ExpiresAt: p.ExpiresAt}, nil
		default:
			return PairingCode{}, domain.Errorf(domain.ECONFLICT, "a pairing code for another phone is being entered on device %s; wait until it expires", id)
		}
	}
	fresh := d.snapshot().pairing == nil
	p, err := d.startPairingLocked(ctx, domain.PairingCode)
	if err != nil {
		return PairingCode{}, err
	}
	code, err := p.client.PairCode(ctx, digits, s.cfg.DisplayName)
	if err != nil {
		// A QR pairing this call joined survives a bad phone number; a
		// pairing opened for this call alone has nothing left to show.
		if fresh || domain.ErrorCode(err) != domain.EINVALID {
			d.endPairingLocked(p.pairing, "pairing code request failed", "failure")
		}
		return PairingCode{}, codeError(err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.pairing != p.pairing {
		return PairingCode{}, domain.Errorf(domain.ECONFLICT, "pairing of device %s ended: %s", id, d.lastError)
	}
	p.Method = domain.PairingCode
	p.Code = code
	p.phone = digits
	p.ExpiresAt = p.started.Add(s.cfg.CodeValidity)
	d.setStateLocked(domain.StatePairing, "")
	d.emit(domain.EventDevicePairing, domain.PairingEventData{Method: domain.PairingCode, ExpiresAt: p.ExpiresAt})
	return PairingCode{Code: code, ExpiresAt: p.ExpiresAt}, nil
}

func codeError(err error) error {
	if domain.ErrorCode(err) == domain.EINTERNAL {
		return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp did not give a pairing code")
	}
	return err
}

// started is a pairing with the client it runs on.
type started struct {
	*pairing
	client ports.Client
}

// startPairing starts a pairing of the given method unless one is under
// way, under d.op.
func (d *device) startPairing(ctx context.Context, method domain.PairingMethod) (*pairing, error) {
	d.op.Lock()
	defer d.op.Unlock()
	p, err := d.startPairingLocked(ctx, method)
	if err != nil {
		return nil, err
	}
	return p.pairing, nil
}

// startPairingLocked returns the pairing under way, or opens a temporary
// session and starts QR pairing on it. d.op must be held.
func (d *device) startPairingLocked(ctx context.Context, method domain.PairingMethod) (started, error) {
	if err := d.goneErr(); err != nil {
		return started{}, err
	}
	v := d.snapshot()
	if v.pairing != nil && v.client != nil {
		return started{v.pairing, v.client}, nil
	}
	if v.loggedIn {
		return started{}, domain.Errorf(domain.ECONFLICT, "device %s is already logged in; log out first", d.id)
	}
	path, err := d.svc.cfg.Sessions.NewPairing(d.id)
	if err != nil {
		return started{}, domain.Wrap(domain.EINTERNAL, err, "make pairing session")
	}
	p := &pairing{
		Pairing: domain.Pairing{Method: method},
		path:    path,
		started: d.svc.cfg.Clock.Now(),
		ready:   make(chan struct{}),
	}
	c, _, err := d.open(path)
	if err != nil {
		_ = d.svc.cfg.Sessions.Discard(path)
		return started{}, err
	}
	d.mu.Lock()
	d.pairing = p
	d.setStateLocked(domain.StatePairing, "")
	d.mu.Unlock()
	if err := c.StartQR(ctx); err != nil {
		d.endPairingLocked(p, "could not reach WhatsApp", "failure")
		return started{}, domain.Wrap(domain.EUNAVAILABLE, err, "could not reach WhatsApp")
	}
	return started{p, c}, nil
}

// awaitFirstQR waits until pairing p has shown its first QR code, or has
// ended without one (the caller tells which).
func (d *device) awaitFirstQR(ctx context.Context, p *pairing) error {
	ctx, cancel := context.WithTimeout(ctx, d.svc.cfg.LoginWait)
	defer cancel()
	_, err := d.waitFor(ctx, func(v view) bool {
		if v.pairing != p {
			return true
		}
		select {
		case <-p.ready:
			return true
		default:
			return false
		}
	})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errShutdown):
		return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	case errors.Is(err, context.DeadlineExceeded):
		return domain.Errorf(domain.ETIMEOUT, "WhatsApp sent no QR code in time")
	default:
		return err
	}
}

// endPairingLocked ends pairing p, if it is still the current one: closes
// its client, discards its temporary session and records why. d.op must be
// held.
func (d *device) endPairingLocked(p *pairing, reason, outcome string) {
	d.mu.Lock()
	if d.pairing != p {
		d.mu.Unlock()
		return
	}
	d.pairing = nil
	d.mu.Unlock()
	d.closeClientLocked()
	if err := d.svc.cfg.Sessions.Discard(p.path); err != nil {
		d.svc.log.Warn("discarding pairing session", "device_id", d.id, "err", err)
	}
	// Announced only now, so that whoever sees disconnected also finds the
	// temporary session gone.
	d.mu.Lock()
	d.setStateLocked(domain.StateDisconnected, reason)
	d.mu.Unlock()
	d.emitReason(domain.EventDeviceDisconnected, pairingEndReason(outcome, reason), reason)
	d.svc.observeLogin(p.Method, outcome)
}

// cancelPairingLocked ends any pairing under way. d.op must be held.
func (d *device) cancelPairingLocked(reason string) {
	if p := d.snapshot().pairing; p != nil {
		d.endPairingLocked(p, reason, "failure")
	}
}

// onQRCodeLocked records a new QR code of the pairing under way. d.mu must
// be held.
func (d *device) onQRCodeLocked(ev domain.QRCode) {
	p := d.pairing
	if p == nil {
		return
	}
	p.QR = ev.Code
	if p.Method == domain.PairingQR {
		p.ExpiresAt = d.svc.cfg.Clock.Now().Add(ev.Timeout)
		d.emit(domain.EventDevicePairing, domain.PairingEventData{Method: domain.PairingQR, ExpiresAt: p.ExpiresAt})
	}
	select {
	case <-p.ready:
	default:
		close(p.ready)
	}
	d.setStateLocked(domain.StatePairing, "")
}

// onPaired moves the newly paired session to its permanent place and
// connects it. d.op must be held.
func (d *device) onPairedLocked(ev domain.Paired) {
	d.mu.Lock()
	p := d.pairing
	d.mu.Unlock()
	if p == nil {
		return
	}
	jid := ev.Identity.JID
	d.closeClientLocked()
	path, err := d.svc.cfg.Sessions.Promote(p.path, jid)
	if err != nil {
		d.svc.log.Error("saving the paired session", "device_id", d.id, "err", err)
		d.endPairingLocked(p, "could not save the paired session", "failure")
		return
	}
	// Record the session before announcing it, so that whoever sees the
	// device logged in also finds it in the registry.
	if err := d.svc.cfg.Registry.Put(d.ctx, domain.Slot{ID: d.id, JID: jid, CreatedAt: d.createdAt}); err != nil {
		// The session is safe on disk and is adopted back into this slot at
		// the next start (its folder carries the device id).
		d.svc.log.Error("recording the paired session in the registry", "device_id", d.id, "err", err)
	}
	d.mu.Lock()
	d.pairing = nil
	d.jid = jid
	d.identity = ev.Identity
	d.setStateLocked(domain.StateConnecting, "")
	d.mu.Unlock()
	d.svc.observeLogin(p.Method, "success")
	d.svc.log.Info("device paired", "device_id", d.id, "jid", jid)
	d.connectLocked(path)
}
