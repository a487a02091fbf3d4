package device

import (
	"context"

	"github.com/gowa-dev/gowa/domain"
)

// The seam to the live events: the service tells Config.Events of each
// transition by calling these where today's code changes a device's state.
// Emit only queues (the event service writes the event to its log before
// telling anyone), so these may run under d.mu.

// emit tells the event service of a device event, if there is one.
func (d *device) emit(typ domain.EventType, data any) {
	if ev := d.svc.cfg.Events; ev != nil {
		ev.Emit(d.id, typ, data)
	}
}

// syncEvents waits until the events emitted so far are in the log, so that
// an API call answers only once the events it caused are durable. A failure
// is logged, not returned: the call itself succeeded.
func (s *Service) syncEvents(ctx context.Context) {
	if ev := s.cfg.Events; ev != nil {
		if err := ev.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("events not yet written when answering", "err", err)
		}
	}
}

// emitReason emits device.disconnected or device.logged_out with a reason
// code and, when it adds something, a human-readable detail.
func (d *device) emitReason(typ domain.EventType, reason, detail string) {
	d.emit(typ, domain.ReasonEventData{Reason: reason, Detail: detail})
}

// emitConnected emits device.connected with the linked account.
func (d *device) emitConnected(id domain.Identity) {
	d.emit(domain.EventDeviceConnected, domain.ConnectedEventData{
		JID: id.JID, Phone: id.Phone, PushName: id.PushName, Platform: id.Platform,
	})
}

// pairingEndReason is the reason code of a pairing that ended without a
// link, from the outcome endPairingLocked records.
func pairingEndReason(outcome, reason string) string {
	switch {
	case outcome == "expired":
		return domain.ReasonPairingExpired
	case reason == "login cancelled" || reason == "device deleted":
		return domain.ReasonLoginCancelled
	default:
		return domain.ReasonPairingFailed
	}
}
