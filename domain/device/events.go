package device

import (
	"context"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// The live events hang off the lifecycle: transition emits them as effects
// (emit: see announce, pairingEvent, codeGiven, slotDeleted, incoming), and
// the owner hands them to Config.Events, which only queues them; the event
// service writes each to its log before telling anyone. Service methods
// answer once the events their command caused are written (syncEvents), and
// an incoming message is acknowledged to WhatsApp only once its
// message.received is (ackWritten).

// emit queues an event for the device id, when events are wired.
func (s *Service) emit(id string, typ domain.EventType, data any) {
	if ev := s.cfg.Events; ev != nil {
		ev.Emit(id, typ, data)
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

// ackWait bounds how long an incoming message's acknowledgement waits for
// its event to be written; the WhatsApp adapter has its own bound too.
const ackWait = 10 * time.Second

// ackWritten calls done once the events emitted so far are written, off
// the owner, so that the device goes on meanwhile.
func (d *device) ackWritten(done func()) {
	d.svc.wg.Add(1)
	go func() {
		defer d.svc.wg.Done()
		ctx, cancel := context.WithTimeout(d.svc.ctx, ackWait)
		defer cancel()
		d.svc.syncEvents(ctx)
		done()
	}()
}
