package whatsapp

import (
	"sync"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/gowa-dev/gowa/domain"
)

// incoming turns a message whatsmeow decrypted into the domain's incoming
// message, and false for protocol traffic that is no one's message (key
// shares, history sync notices and the like). A kind the gateway does not
// read yet keeps its type and has no text, so that it is told, not
// dropped.
func incoming(e *events.Message) (domain.IncomingMessage, bool) {
	kind, text := messageKind(e.Message)
	if kind == "" {
		return domain.IncomingMessage{}, false
	}
	return domain.IncomingMessage{Message: domain.MessageEventData{
		ID:        string(e.Info.ID),
		Chat:      e.Info.Chat.ToNonAD().String(),
		From:      e.Info.Sender.ToNonAD().String(),
		FromMe:    e.Info.IsFromMe,
		PushName:  e.Info.PushName,
		Timestamp: e.Info.Timestamp.UTC(),
		Type:      kind,
		Text:      text,
	}}, true
}

// messageKind names what m is, with its text when it is a text; "" for
// protocol traffic.
func messageKind(m *waE2E.Message) (kind, text string) {
	switch {
	case m == nil:
		return "", ""
	case m.Conversation != nil:
		return "text", m.GetConversation()
	case m.ExtendedTextMessage != nil:
		return "text", m.GetExtendedTextMessage().GetText()
	case m.ImageMessage != nil:
		return "image", ""
	case m.VideoMessage != nil:
		return "video", ""
	case m.PtvMessage != nil:
		return "video_note", ""
	case m.AudioMessage != nil:
		if m.GetAudioMessage().GetPTT() {
			return "voice", ""
		}
		return "audio", ""
	case m.DocumentMessage != nil:
		return "document", ""
	case m.StickerMessage != nil:
		return "sticker", ""
	case m.LocationMessage != nil:
		return "location", ""
	case m.LiveLocationMessage != nil:
		return "live_location", ""
	case m.ContactMessage != nil:
		return "contact", ""
	case m.ContactsArrayMessage != nil:
		return "contacts", ""
	case m.ReactionMessage != nil:
		return "reaction", ""
	case m.PollCreationMessage != nil, m.PollCreationMessageV2 != nil, m.PollCreationMessageV3 != nil:
		return "poll", ""
	case m.PollUpdateMessage != nil:
		return "poll_vote", ""
	case m.ProtocolMessage != nil:
		switch m.GetProtocolMessage().GetType() {
		case waE2E.ProtocolMessage_REVOKE:
			return "revoke", ""
		case waE2E.ProtocolMessage_MESSAGE_EDIT:
			return "edit", ""
		}
		return "", "" // key shares, history sync notices, app state
	case m.SenderKeyDistributionMessage != nil:
		return "", "" // a group's key share with nothing else in it
	}
	return "unknown", ""
}

// ackWait bounds how long an incoming message's acknowledgement waits for
// its event to be written.
const ackWait = 10 * time.Second

// emitDurably tells the device of an incoming message and waits until its
// event is in the event log: whatsmeow acknowledges the message to WhatsApp
// when this handler returns, and WhatsApp never sends an acknowledged
// message again, so a crash in between must not lose it. The wait ends
// early when the session closes (the message is then not acknowledged, and
// WhatsApp sends it again at the next connection).
func (c *Client) emitDurably(msg domain.IncomingMessage) {
	done := make(chan struct{})
	msg.Done = sync.OnceFunc(func() { close(done) })
	c.emit(msg)
	t := time.NewTimer(ackWait)
	defer t.Stop()
	select {
	case <-done:
	case <-c.ctx.Done():
	case <-t.C:
		c.log.Warn("incoming message acknowledged before its event was written", "id", msg.Message.ID)
	}
}
