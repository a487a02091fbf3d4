package device

import (
	"context"
	"fmt"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// The device's blocking work: each function below is an effect the owner
// carries out. It queues a job (run in order on the device's job
// goroutine) or, for a call that waits on WhatsApp, starts one goroutine
// that the service waits for; either way the result comes back to the
// owner as an input.

// newClientSlot makes the lifetime of client gen.
func (d *device) newClientSlot(gen uint64) *clientSlot {
	ctx, cancel := context.WithCancel(d.ctx)
	cs := &clientSlot{ctx: ctx, cancel: cancel}
	d.cmu.Lock()
	d.clients[gen] = cs
	d.cmu.Unlock()
	return cs
}

// install records the client a job opened; when gen was closed meanwhile it
// closes the client instead and tells false.
func (d *device) install(gen uint64, cs *clientSlot, c ports.Client) bool {
	d.cmu.Lock()
	if cs.closed {
		d.cmu.Unlock()
		d.closeQuietly(c)
		return false
	}
	cs.c = c
	d.cmu.Unlock()
	return true
}

func (d *device) clientOf(gen uint64) ports.Client {
	c, _ := d.openClient(gen)
	return c
}

// openClient is client gen and its lifetime context, read together, or nil
// when it is not open.
func (d *device) openClient(gen uint64) (ports.Client, context.Context) {
	d.cmu.Lock()
	defer d.cmu.Unlock()
	if cs, ok := d.clients[gen]; ok && !cs.closed {
		return cs.c, cs.ctx
	}
	return nil, nil
}

// closeClient ends client gen's lifetime now and closes it as a job.
func (d *device) closeClient(gen uint64) {
	d.cmu.Lock()
	cs, ok := d.clients[gen]
	delete(d.clients, gen)
	if ok {
		cs.closed = true
	}
	d.cmu.Unlock()
	if !ok {
		return
	}
	cs.cancel()
	if c := cs.c; c != nil {
		d.job(func() { d.closeQuietly(c) })
	}
}

func (d *device) closeQuietly(c ports.Client) {
	if err := c.Close(); err != nil {
		d.svc.log.Warn("closing WhatsApp client", "device_id", d.id, "err", err)
	}
}

// events is the callback of client gen: its events go to the inbox.
func (d *device) events(gen uint64) func(domain.Event) {
	return func(ev domain.Event) { d.post(clientEvent{Gen: gen, Event: ev}) }
}

func (d *device) openPairing(e openPairing) {
	cs := d.newClientSlot(e.Gen)
	d.job(func() {
		key, err := d.svc.cfg.Sessions.NewPairing(d.id)
		if err != nil {
			d.post(pairingOpened{Gen: e.Gen, Err: domain.Wrap(domain.EINTERNAL, err, "make pairing session")})
			return
		}
		c, err := d.svc.cfg.WhatsApp.Open(cs.ctx, key, d.events(e.Gen))
		if err != nil {
			d.post(pairingOpened{Gen: e.Gen, Key: key, Err: domain.Wrap(domain.EINTERNAL, err, "open session")})
			return
		}
		// Installed, then posted before StartQR: the owner knows the
		// session and can use its client before any event of it.
		installed := d.install(e.Gen, cs, c)
		d.post(pairingOpened{Gen: e.Gen, Key: key})
		if !installed {
			return
		}
		if err := c.StartQR(cs.ctx); err != nil && cs.ctx.Err() == nil {
			err = domain.Wrap(domain.EUNAVAILABLE, err, "could not reach WhatsApp")
			d.post(pairingOpened{Gen: e.Gen, Key: key, Err: err})
		}
	})
}

func (d *device) askCode(e askCode) {
	c, cctx := d.openClient(e.Gen)
	if c == nil {
		d.post(codeGiven{Gen: e.Gen, Phone: e.Phone, Err: domain.Errorf(domain.ECONFLICT, "the pairing ended")})
		return
	}
	// PairCode can wait for WhatsApp a while: on its own goroutine, so that
	// the pairing's other jobs (a cancel's close) are not queued behind it.
	// Closing the client cancels cctx, which ends it.
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		ctx, cancel := context.WithTimeout(cctx, d.svc.cfg.LoginWait)
		defer cancel()
		code, expires, err := c.PairCode(ctx, e.Phone, d.svc.cfg.DisplayName)
		d.post(codeGiven{Gen: e.Gen, Phone: e.Phone, Code: code, ExpiresAt: expires, Err: err})
	}()
}

func (d *device) promote(e promote) {
	d.closeClient(e.Gen)
	createdAt := d.createdAt
	d.job(func() {
		jid := e.Identity.JID
		if err := d.svc.cfg.Sessions.Promote(e.Key, jid); err != nil {
			d.svc.log.Error("saving the paired session", "device_id", d.id, "err", err)
			d.post(promoted{Gen: e.Gen, Err: err})
			return
		}
		// Recorded before it is announced, so that whoever sees the device
		// logged in also finds it in the registry.
		if err := d.svc.cfg.Registry.Put(context.WithoutCancel(d.ctx), domain.Slot{ID: d.id, JID: jid, CreatedAt: createdAt}); err != nil {
			// The session is safe on disk and is adopted back into this
			// slot at the next start (its folder carries the device id).
			d.svc.log.Error("recording the paired session in the registry", "device_id", d.id, "err", err)
		}
		d.svc.log.Info("device paired", "device_id", d.id, "jid", jid)
		d.post(promoted{Gen: e.Gen})
	})
}

func (d *device) connect(e connect) {
	cs := d.newClientSlot(e.Gen)
	d.job(func() {
		// Restores, reconnects and unlinks all count against one bound, so
		// that a start with many sessions does not dial them all at once.
		select {
		case d.svc.sem <- struct{}{}:
		case <-cs.ctx.Done():
			return
		case <-d.svc.closing:
			return
		}
		release := func() { <-d.svc.sem }
		select {
		case <-d.svc.closing:
			release()
			return
		default:
		}
		c, err := d.svc.cfg.WhatsApp.Open(cs.ctx, e.JID, d.events(e.Gen))
		if err != nil {
			release()
			if cs.ctx.Err() == nil {
				d.svc.log.Warn("the stored session cannot be opened", "device_id", d.id, "err", err)
				d.post(opened{Gen: e.Gen, Err: err})
			}
			return
		}
		if !d.install(e.Gen, cs, c) {
			release()
			return
		}
		_, linked := c.Identity()
		d.post(opened{Gen: e.Gen, Linked: linked})
		if !linked {
			release()
			return
		}
		// Connect dials on its own goroutine: a dial that hangs must not
		// hold up this device's other jobs (a close, a logout).
		d.svc.wg.Add(1)
		go func() {
			defer d.svc.wg.Done()
			defer release()
			if err := c.Connect(cs.ctx); err != nil && cs.ctx.Err() == nil {
				d.svc.log.Warn("connecting", "device_id", d.id, "err", err)
				d.post(connectFailed{Gen: e.Gen, Err: err})
			}
		}()
	})
}

func (d *device) logout(e logout) {
	c, cctx := d.openClient(e.Gen)
	if c == nil {
		d.post(loggedOutDone{Gen: e.Gen, Err: domain.Errorf(domain.EUNAVAILABLE, "the session is not connected")})
		return
	}
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		ctx, cancel := context.WithTimeout(cctx, d.svc.cfg.UnlinkWait)
		defer cancel()
		d.post(loggedOutDone{Gen: e.Gen, Err: c.Logout(ctx)})
	}()
}

// remove deletes the session files, then records the ended session in the
// registry: without the JID once the files are gone, with it when they
// could not be removed (so that the next start neither connects nor adopts
// them).
func (d *device) remove(e remove) {
	slot := d.slot()
	d.job(func() {
		slot.Ended, slot.EndedAt = e.Reason, d.svc.cfg.Clock.Now()
		var err error
		if e.JID != "" {
			if err = d.svc.cfg.Sessions.Delete(e.JID); err != nil {
				err = fmt.Errorf("delete session files: %w", err)
				d.svc.log.Error("removing the files of an ended session", "device_id", d.id, "reason", e.Reason, "err", err)
			}
		}
		if err == nil {
			slot.JID = ""
			d.svc.log.Warn("session dropped", "device_id", d.id, "reason", e.Reason)
		}
		if perr := d.svc.cfg.Registry.Put(context.WithoutCancel(d.ctx), slot); perr != nil {
			d.svc.log.Error("recording the ended session in the registry", "device_id", d.id, "err", perr)
			if err == nil {
				err = fmt.Errorf("record the ended session in the registry: %w", perr)
			}
		}
		d.post(removed{Err: err, At: slot.EndedAt})
	})
}

func (d *device) deleteSlot(e deleteSlot) {
	slot := d.slot()
	d.job(func() {
		ctx := context.WithoutCancel(d.ctx)
		if e.JID != "" {
			if err := d.svc.cfg.Sessions.Delete(e.JID); err != nil {
				err = fmt.Errorf("delete session files: %w", err)
				d.svc.log.Error("removing the files of a deleted device", "device_id", d.id, "err", err)
				slot.Ended, slot.EndedAt = e.Reason, d.svc.cfg.Clock.Now()
				if perr := d.svc.cfg.Registry.Put(ctx, slot); perr != nil {
					d.svc.log.Error("recording the ended session in the registry", "device_id", d.id, "err", perr)
				}
				d.post(slotDeleted{Err: err})
				return
			}
			d.svc.log.Warn("session dropped", "device_id", d.id, "reason", "device deleted")
		}
		if err := d.svc.cfg.Registry.Delete(ctx, d.id); err != nil {
			d.post(slotDeleted{Err: fmt.Errorf("delete device slot: %w", err), FilesGone: true})
			return
		}
		d.post(slotDeleted{FilesGone: true})
	})
}
