package device

import (
	"context"
	"fmt"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// In cluster mode (Config.Cluster) the service runs only the devices whose
// lease this replica holds: domain/cluster calls Adopt when it acquires a
// lease and Drop before it releases one.

// Adopt starts device id here, as start-up restore starts each slot: it
// loads the slot from the registry and, when the slot has a session,
// connects it in the background (at most RestoreConcurrency at a time); a
// slot without one just exists. A device already running here is left as
// it is. A slot the registry does not hold is ENOTFOUND (a login may be
// about to create it here). Call it only while holding the device's lease.
func (s *Service) Adopt(ctx context.Context, id string) error {
	if err := domain.ValidateDeviceID(id); err != nil {
		return err
	}
	if s.running(id) {
		return nil
	}
	sl, ok, err := s.registered(ctx, id)
	if err != nil {
		return err
	}
	if !ok {
		// Held here now: a login may create it.
		s.mu.Lock()
		delete(s.dropped, id)
		s.mu.Unlock()
		return domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	hasSession := false
	if sl.JID != "" {
		if hasSession, err = s.hasSession(sl.JID); err != nil {
			return domain.Wrap(domain.EUNAVAILABLE, err, "list sessions")
		}
	}
	pairings, err := s.pairingsOf(id)
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "list sessions")
	}
	// The store lists this replica's own pairings too (one cut off when a
	// device was dropped here is finished here), so it cannot tell a
	// pairing in progress here from one cut off: only this service can. A
	// login may have created the device since the check above (a routed
	// call or a round adopting the lease it just took while the login
	// made the slot), and a pairing it opens is made after the device
	// runs. Checked again now, after the listing: every pairing listed
	// belongs to a device that runs here now (leave it alone) or that has
	// stopped (its pairing is cut off).
	if s.running(id) {
		return nil
	}
	for _, st := range pairings {
		// A pairing of this slot cut off before it saved the session, on a
		// replica that died or here (a device dropped while it promoted):
		// finished if the phone had linked it, discarded if not, as Start
		// does.
		if st = s.finishPairing(ctx, st); st.JID == "" {
			continue
		}
		if st.JID != sl.JID {
			sl.JID, sl.Ended, sl.EndedAt = st.JID, domain.ReasonNone, time.Time{}
			if err := s.cfg.Registry.Put(ctx, sl); err != nil {
				return domain.Wrap(domain.EUNAVAILABLE, err, "record the session paired before a crash")
			}
		}
		hasSession = true
	}
	sl, m, err := s.load(ctx, sl, hasSession)
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "record the lost session of device "+id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	if _, ok := s.devices[id]; ok {
		return nil // adopted, or created by a login, meanwhile
	}
	delete(s.dropped, id)
	s.addLocked(sl, m).post(start{})
	if m.State == domain.StateConnecting {
		s.log.Info("adopted a device: restoring its session", "device_id", id)
	}
	return nil
}

// Drop stops device id here without logging out, as Close does for every
// device: its connection closes, a pairing under way is cancelled, and the
// session stays for the replica that takes the device next. It waits for
// the device to stop (or ctx to end) and forgets it. Calls in flight on it,
// and calls made until Adopt takes it again, get EUNAVAILABLE: the device
// is moving to another replica, where they can be made again. Dropping a
// device that is not running here is not an error.
func (s *Service) Drop(ctx context.Context, id string) error {
	s.mu.Lock()
	d, ok := s.devices[id]
	s.dropped[id] = true
	s.mu.Unlock()
	if !ok {
		return nil
	}
	d.leave()
	d.post(cmdShutdown{Drop: true})
	select {
	case <-d.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("drop device %s: %w", id, ctx.Err())
	}
}

// running tells whether device id runs here.
func (s *Service) running(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.devices[id]
	return ok
}

// slotGetter is a registry that reads one slot without listing them all.
// Adopt uses it when the registry has it: the shared registry of a
// cluster holds every replica's devices.
type slotGetter interface {
	Get(ctx context.Context, id string) (domain.Slot, bool, error)
}

// sessionChecker is a session store that tells whether one linked session
// is stored without listing them all.
type sessionChecker interface {
	Has(jid string) (bool, error)
}

// hasSession tells whether jid's linked session is stored.
func (s *Service) hasSession(jid string) (bool, error) {
	if sc, ok := s.cfg.Sessions.(sessionChecker); ok {
		return sc.Has(jid)
	}
	stored, err := s.cfg.Sessions.Sessions()
	if err != nil {
		return false, err
	}
	for _, st := range stored {
		if st.JID == jid {
			return true, nil
		}
	}
	return false, nil
}

// pairingLister is a session store that lists the cut-off pairings of one
// device without listing every session.
type pairingLister interface {
	Pairings(deviceID string) ([]ports.StoredSession, error)
}

// pairingsOf lists the pairings of device id that no other live replica
// is making: those cut off, and those this replica makes, of which the
// store cannot tell those in progress (Adopt checks that the device does
// not run here).
func (s *Service) pairingsOf(id string) ([]ports.StoredSession, error) {
	if pl, ok := s.cfg.Sessions.(pairingLister); ok {
		return pl.Pairings(id)
	}
	stored, err := s.cfg.Sessions.Sessions()
	if err != nil {
		return nil, err
	}
	var out []ports.StoredSession
	for _, st := range stored {
		if st.JID == "" && st.DeviceID == id {
			out = append(out, st)
		}
	}
	return out, nil
}

// registered reads slot id from the registry.
func (s *Service) registered(ctx context.Context, id string) (domain.Slot, bool, error) {
	if g, ok := s.cfg.Registry.(slotGetter); ok {
		sl, found, err := g.Get(ctx, id)
		if err != nil {
			return domain.Slot{}, false, domain.Wrap(domain.EUNAVAILABLE, err, "read the device registry")
		}
		return sl, found, nil
	}
	slots, err := s.cfg.Registry.List(ctx)
	if err != nil {
		return domain.Slot{}, false, domain.Wrap(domain.EUNAVAILABLE, err, "read the device registry")
	}
	for _, sl := range slots {
		if sl.ID == id {
			return sl, true, nil
		}
	}
	return domain.Slot{}, false, nil
}

// claim prepares the creation of device id in cluster mode: it takes the
// device's lease (Config.Claim) and checks that the registry holds no slot
// of that id. It returns the device when the claim started it (the slot
// existed after all).
func (s *Service) claim(ctx context.Context, id string) (*device, error) {
	if s.cfg.Claim != nil {
		if err := s.cfg.Claim(ctx, id); err != nil {
			return nil, err
		}
		s.mu.Lock()
		d := s.devices[id]
		delete(s.dropped, id) // the lease is this replica's again
		s.mu.Unlock()
		if d != nil {
			return d, nil
		}
	}
	return nil, s.notRegistered(ctx, id)
}

// notRegistered refuses to create slot id here when the registry already
// holds it: in cluster mode a slot this replica does not run belongs to
// the replica holding its lease, or is waiting for one.
func (s *Service) notRegistered(ctx context.Context, id string) error {
	_, ok, err := s.registered(ctx, id)
	switch {
	case err != nil:
		return err
	case ok:
		return domain.Errorf(domain.EUNAVAILABLE, "device %s is not run by this replica yet; try again", id)
	}
	return nil
}
