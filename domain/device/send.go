package device

import (
	"context"
	"errors"
	"unicode/utf8"

	"github.com/gowa-dev/gowa/domain"
)

// MaxTextLength is the longest text the gateway sends, in characters.
const MaxTextLength = 65536

// Send sends text to a phone number or user JID from device id. An empty
// id means the one device that is logged in; it is EINVALID when several
// are. A device that is connecting is waited for, up to SendWait; one that
// is not connected then is ECONFLICT. It returns the message and the id of
// the device that sent it.
func (s *Service) Send(ctx context.Context, id, to, text string) (domain.SentMessage, string, error) {
	jid, err := domain.ParseRecipient(to)
	if err != nil {
		return domain.SentMessage{}, "", err
	}
	if text == "" || utf8.RuneCountInString(text) > MaxTextLength {
		return domain.SentMessage{}, "", domain.Errorf(domain.EINVALID, "message must be 1 to %d characters", MaxTextLength)
	}
	if !utf8.ValidString(text) {
		return domain.SentMessage{}, "", domain.Errorf(domain.EINVALID, "message must be valid UTF-8")
	}
	d, err := s.sender(id)
	if err != nil {
		return domain.SentMessage{}, "", err
	}
	// One send at a time goes to the client, in order; the wait for the
	// turn ends at once, with nothing sent, when the device moves away.
	if err := d.admitSend(ctx); err != nil {
		return domain.SentMessage{}, d.id, err
	}
	msg, v, err := s.sendAdmitted(ctx, d, jid, text)
	d.endSend()
	if err != nil {
		if d.dropped.Load() {
			// Its client closed under the send: the device moved.
			return domain.SentMessage{}, d.id, stoppedError(d.id, true)
		}
		return domain.SentMessage{}, d.id, err
	}
	s.emit(d.id, domain.EventMessageSent, domain.MessageEventData{
		ID: msg.ID, Chat: jid, From: domain.PhoneOfJID(v.jid) + "@s.whatsapp.net", FromMe: true, Timestamp: msg.Timestamp, Type: "text", Text: text,
	})
	s.syncEvents(ctx)
	return msg, d.id, nil
}

// sendAdmitted sends text to jid from d, whose turn it is: it waits for a
// device that is connecting, up to SendWait.
func (s *Service) sendAdmitted(ctx context.Context, d *device, jid, text string) (domain.SentMessage, view, error) {
	v := d.view()
	if v.state == domain.StateConnecting {
		// Coming back after a restart or a dropped connection: worth a
		// short wait rather than a refusal.
		wctx, cancel := context.WithTimeout(ctx, s.cfg.SendWait)
		var err error
		v, err = d.waitFor(wctx, func(v view) bool { return v.state != domain.StateConnecting })
		cancel()
		switch {
		case errors.Is(err, errShutdown):
			return domain.SentMessage{}, v, stoppedError(d.id, d.dropped.Load())
		case err != nil && ctx.Err() != nil:
			return domain.SentMessage{}, v, ctx.Err() // the caller gave up
		}
		// SendWait ran out: not connected, said below.
	}
	if v.state != domain.StateConnected || v.client == nil {
		return domain.SentMessage{}, v, domain.Errorf(domain.ECONFLICT, "device %s is not connected (state %s)", d.id, v.state)
	}
	msg, err := v.client.SendText(ctx, jid, text)
	return msg, v, err
}

// sender returns the device named id, or the only logged-in device when id
// is empty.
func (s *Service) sender(id string) (*device, error) {
	if id != "" {
		return s.lookup(id)
	}
	s.mu.Lock()
	devs := s.sortedDevices()
	s.mu.Unlock()
	var found *device
	for _, d := range devs {
		if !d.view().loggedIn {
			continue
		}
		if found != nil {
			return nil, domain.Errorf(domain.EINVALID, "several devices are logged in; name one in the X-Device-Id header")
		}
		found = d
	}
	if found == nil {
		return nil, domain.Errorf(domain.ECONFLICT, "no device is logged in")
	}
	return found, nil
}
