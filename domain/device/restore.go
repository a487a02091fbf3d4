package device

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Start loads the slots, reconciles them with the session folders on disk,
// and reconnects every device that has a session in the background, at
// most RestoreConcurrency at a time. It returns once restoring has begun.
// A slot whose session ended (Slot.Ended) comes back logged_out, with its
// reason.
//
// Reconciling never deletes a linked session: a folder without a slot is
// adopted (into the slot named by its marker, or a new one named after its
// JID), and a pairing cut off by a crash is finished if the phone had
// already linked it, or discarded if not.
func (s *Service) Start(ctx context.Context) error {
	if s.cfg.Cluster {
		s.log.Info("cluster mode: devices start as their leases are acquired")
		return nil
	}
	slots, err := s.cfg.Registry.List(ctx)
	if err != nil {
		return fmt.Errorf("list device slots: %w", err)
	}
	stored, err := s.cfg.Sessions.Sessions()
	if err != nil {
		return fmt.Errorf("list sessions: %w", err)
	}
	byID := make(map[string]domain.Slot, len(slots))
	owner := make(map[string]string) // jid → slot id
	for _, sl := range slots {
		byID[sl.ID] = sl
		if sl.JID != "" {
			owner[sl.JID] = sl.ID
		}
	}
	onDisk := make(map[string]bool)
	for _, st := range stored {
		if st.JID == "" {
			if st = s.finishPairing(ctx, st); st.JID == "" {
				continue
			}
		}
		onDisk[st.JID] = true
		if _, ok := owner[st.JID]; ok {
			continue
		}
		sl := s.adopt(st, byID)
		byID[sl.ID] = sl
		owner[sl.JID] = sl.ID
		if err := s.cfg.Registry.Put(ctx, sl); err != nil {
			return fmt.Errorf("adopt session into slot %s: %w", sl.ID, err)
		}
		s.log.Info("adopted a session found on disk", "device_id", sl.ID, "jid", sl.JID)
	}

	// Decide each device's first state, and record what changed, before
	// taking the service's lock: no registry write happens under it.
	type loaded struct {
		slot domain.Slot
		m    machine
	}
	var devs []loaded
	restoring := 0
	for _, id := range slices.Sorted(maps.Keys(byID)) {
		sl, m, err := s.load(ctx, byID[id], onDisk[byID[id].JID])
		if err != nil {
			return err
		}
		if m.State == domain.StateConnecting {
			restoring++
		}
		devs = append(devs, loaded{sl, m})
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return domain.Errorf(domain.EUNAVAILABLE, "the server is shutting down")
	}
	for _, l := range devs {
		s.addLocked(l.slot, l.m).post(start{})
	}
	s.log.Info("restoring sessions", "devices", len(byID), "sessions", restoring)
	return nil
}

// load decides a slot's first state from what the registry says and
// whether its session is stored (hasSession), as start-up restore and
// Adopt do, and records in the registry a session found missing. A slot
// with a session starts connecting (the start input dials it).
func (s *Service) load(ctx context.Context, sl domain.Slot, hasSession bool) (domain.Slot, machine, error) {
	m := machine{ID: sl.ID, State: domain.StateDisconnected, Since: s.cfg.Clock.Now(), JID: sl.JID}
	if sl.JID != "" {
		m.Identity = domain.Identity{JID: sl.JID, Phone: domain.PhoneOfJID(sl.JID)}
	}
	switch {
	case sl.JID != "" && !hasSession:
		reason := cmp.Or(sl.Ended, domain.ReasonSessionMissing)
		m.JID, m.Identity = "", domain.Identity{}
		m.State, m.Reason = domain.StateLoggedOut, reason
		if sl.Ended != domain.ReasonNone {
			m.Told = told{domain.EventDeviceLoggedOut, reason}
		} else {
			// Found now: start tells it (device.logged_out).
			m.Detail = "the session files were missing at start-up"
			s.log.Warn("session dropped: its files are missing; the device must log in again", "device_id", sl.ID, "reason", reason)
		}
		sl.JID, sl.Ended, sl.EndedAt = "", reason, cmp.Or(sl.EndedAt, m.Since)
		m.Since = sl.EndedAt
		if err := s.cfg.Registry.Put(ctx, sl); err != nil {
			return sl, m, fmt.Errorf("clear lost session of slot %s: %w", sl.ID, err)
		}
	case sl.Ended != domain.ReasonNone:
		// The session ended before; a JID means its files are left.
		m.State, m.Reason, m.Since = domain.StateLoggedOut, sl.Ended, cmp.Or(sl.EndedAt, m.Since)
		m.Told = told{domain.EventDeviceLoggedOut, sl.Ended} // told when it ended
	case sl.JID != "":
		m.State = domain.StateConnecting
	}
	return sl, m, nil
}

// finishPairing looks into a pairing session left by a crash: one the phone
// had linked becomes a linked session; any other is discarded.
func (s *Service) finishPairing(ctx context.Context, st ports.StoredSession) ports.StoredSession {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := s.cfg.WhatsApp.Open(ctx, st.Key, func(domain.Event) {})
	if err != nil {
		s.log.Warn("a cut-off pairing session cannot be read; discarding it", "device_id", st.DeviceID, "err", err)
		_ = s.cfg.Sessions.Discard(st.Key)
		return ports.StoredSession{}
	}
	id, paired := c.Identity()
	_ = c.Close()
	if !paired {
		_ = s.cfg.Sessions.Discard(st.Key)
		return ports.StoredSession{}
	}
	if err := s.cfg.Sessions.Promote(st.Key, id.JID); err != nil {
		s.log.Error("saving a session paired before a crash", "device_id", st.DeviceID, "err", err)
		return ports.StoredSession{}
	}
	s.log.Info("finished a pairing cut off by a restart", "device_id", st.DeviceID, "jid", id.JID)
	return ports.StoredSession{JID: id.JID, Key: id.JID, DeviceID: st.DeviceID}
}

// adopt chooses the slot for a session that no slot claims: the slot named
// by its marker if that slot is free, else a new slot named after the JID.
func (s *Service) adopt(st ports.StoredSession, byID map[string]domain.Slot) domain.Slot {
	if sl, ok := byID[st.DeviceID]; ok && sl.JID == "" {
		sl.JID = st.JID
		return sl
	}
	id := st.DeviceID
	if _, taken := byID[id]; taken || domain.ValidateDeviceID(id) != nil {
		id = strings.NewReplacer(":", "-", "@", "-").Replace(st.JID)
		base := id
		for i := 2; ; i++ {
			if _, taken := byID[id]; !taken {
				break
			}
			id = fmt.Sprintf("%s-%d", base, i)
		}
	}
	return domain.Slot{ID: id, JID: st.JID, CreatedAt: s.cfg.Clock.Now()}
}
