package whatsapp

import (
	"fmt"

	"go.mau.fi/whatsmeow/types/events"

	"github.com/gowa-dev/gowa/domain"
)

// handle translates whatsmeow's events into domain events. whatsmeow calls
// it on its node-handling goroutine (and, for a few events, on goroutines of
// their own), so it never blocks. While a pairing runs, the events that
// concern it go to handlePairing.
func (c *Client) handle(evt any) {
	if c.handlePairing(evt) {
		return
	}
	switch e := evt.(type) {
	case *events.ManualLoginReconnect:
		c.onRestart()
	case *events.Connected:
		c.emit(domain.Connected{})
	case *events.Disconnected:
		// Before pairing completes, a drop ends the pairing (handlePairing).
		if c.linked() {
			c.emit(domain.Disconnected{})
		}
	case *events.LoggedOut:
		// whatsmeow deletes the stored session right after this event.
		c.forget()
		c.emit(domain.LoggedOut{Reason: loggedOutReason(e.Reason), Detail: fmt.Sprintf("%d %s", int(e.Reason), e.Reason.String())})
	case *events.StreamReplaced:
		c.emit(domain.Offline{Reason: domain.ReasonStreamReplaced, Detail: "stream replaced: another connection took over this session"})
	case *events.TemporaryBan:
		c.emit(domain.Offline{Reason: domain.ReasonTemporaryBan, Detail: fmt.Sprintf("temporarily banned by WhatsApp (code %d) for %s", int(e.Code), e.Expire)})
	case *events.ClientOutdated:
		c.emit(domain.Offline{Reason: domain.ReasonClientOutdated, Detail: "WhatsApp says this client version is outdated"})
	case *events.ConnectFailure:
		reason := fmt.Sprintf("%d %s", int(e.Reason), e.Reason.String())
		if e.Message != "" {
			reason += ": " + e.Message
		}
		c.emit(domain.Offline{Reason: domain.ReasonRefused, Detail: "WhatsApp refused the connection: " + reason})
	case *events.PushNameSetting:
		name := e.Action.GetName()
		if name == "" {
			return
		}
		c.mu.Lock()
		c.identity.PushName = name
		c.mu.Unlock()
		c.emit(domain.PushNameChanged{PushName: name})
	case *events.Message:
		if msg, ok := incoming(e); ok {
			c.emitDurably(msg)
		} else {
			c.log.Debug("protocol message not told as an event", "id", e.Info.ID)
		}
	case *events.StreamError:
		c.log.Warn("WhatsApp stream error", "code", e.Code)
	case *events.KeepAliveTimeout:
		c.log.Debug("WhatsApp keepalive timed out", "errors", e.ErrorCount)
	}
}

// loggedOutReason names what ended a session in the domain's words.
func loggedOutReason(r events.ConnectFailureReason) domain.Reason {
	switch r {
	case events.ConnectFailureLoggedOut:
		return domain.ReasonRemovedOnPhone
	case events.ConnectFailureMainDeviceGone:
		return domain.ReasonAccountLocked
	case events.ConnectFailureUnknownLogout:
		return domain.ReasonBanned
	default:
		return domain.ReasonLoggedOutOther
	}
}
