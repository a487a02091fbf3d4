package wasim

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// inboxMessage is a text a simulated phone received, or its own copy of
// one its linked devices sent.
type inboxMessage struct {
	phone  string // whose inbox
	sender types.JID
	id     string
	ts     time.Time
	text   string
	chat   types.JID
	fromMe bool
}

// handleMessage takes a message a logged-in device sends: every part
// encrypted for a simulated phone is decrypted into that phone's inbox (the
// recipient's, or the sender's own copy), then the server acks. Parts for
// other companions are dropped: the simulator holds no private keys of
// theirs and does not relay. The inbox is written before the ack, so the
// text is there when SendMessage returns.
func (c *conn) handleMessage(node *waBinary.Node) {
	id, _ := node.Attrs["id"].(string)
	to, _ := node.Attrs["to"].(types.JID)
	sender, err := types.ParseJID(c.deviceJID())
	if err != nil || c.deviceJID() == "" || id == "" {
		c.log.Debug("wasim: message from a device that is not logged in")
		return
	}
	now := time.Unix(time.Now().Unix(), 0) // the ack's t has whole seconds
	for _, part := range messageParts(node, to) {
		c.deliver(part.to, sender, id, now, part.enc)
	}
	ack := waBinary.Node{Tag: "ack", Attrs: waBinary.Attrs{"class": "message", "id": id, "t": now.Unix()}}
	if !to.IsEmpty() {
		ack.Attrs["from"] = to
	}
	if err := c.send(ack); err != nil {
		c.log.Debug("wasim: send ack", "err", err)
	}
}

type messagePart struct {
	to  types.JID
	enc waBinary.Node
}

// messageParts lists the encrypted parts of a message: one per device in
// <participants>, or the direct <enc> children of a message to a single
// device (whatsmeow's peer messages to its own phone).
func messageParts(node *waBinary.Node, to types.JID) []messagePart {
	var parts []messagePart
	for _, p := range node.GetChildrenByTag("participants") {
		for _, t := range p.GetChildrenByTag("to") {
			jid, ok := t.Attrs["jid"].(types.JID)
			if !ok {
				continue
			}
			for _, enc := range t.GetChildrenByTag("enc") {
				parts = append(parts, messagePart{jid, enc})
			}
		}
	}
	for _, enc := range node.GetChildrenByTag("enc") {
		parts = append(parts, messagePart{to, enc})
	}
	return parts
}

// deliver decrypts one part if it is for a simulated phone and files the
// text in that phone's inbox.
func (c *conn) deliver(to, sender types.JID, id string, ts time.Time, enc waBinary.Node) {
	w := c.srv.world
	to = w.toPN(to)
	if to.Server != types.DefaultUserServer || to.Device != 0 {
		return
	}
	w.mu.Lock()
	a := w.accounts[to.User]
	w.mu.Unlock()
	if a == nil {
		return
	}
	typ, _ := enc.Attrs["type"].(string)
	msg, err := a.decrypt(c.ctx, sender, typ, content(enc))
	if err != nil {
		c.log.Warn("wasim: phone could not decrypt a message", "phone", a.phone, "sender", sender.String(), "id", id, "err", err)
		return
	}
	m := inboxMessage{phone: a.phone, sender: sender, id: id, ts: ts, chat: sender.ToNonAD()}
	if dsm := msg.GetDeviceSentMessage(); dsm != nil {
		if a.phone != sender.User {
			c.log.Warn("wasim: device-sent copy addressed to another account", "phone", a.phone, "id", id)
			return
		}
		dest, err := types.ParseJID(dsm.GetDestinationJID())
		if err != nil {
			c.log.Warn("wasim: device-sent copy without a destination", "id", id)
			return
		}
		m.chat, m.fromMe, msg = w.toPN(dest.ToNonAD()), true, dsm.GetMessage()
	}
	m.text = messageText(msg)
	if m.text == "" {
		return // protocol messages, receipts of app state and the like
	}
	if err := w.saveMessage(c.ctx, m); err != nil {
		c.log.Error("wasim: save message", "phone", a.phone, "err", err)
		return
	}
	c.log.Debug("wasim: phone received a message", "phone", a.phone, "id", id, "from_me", m.fromMe)
}

// decrypt opens a Signal message sent to the phone by a companion device,
// in the phone's Signal store.
func (a *account) decrypt(ctx context.Context, sender types.JID, typ string, data []byte) (*waE2E.Message, error) {
	a.signalMu.Lock()
	defer a.signalMu.Unlock()
	addr := sender.SignalAddress()
	builder := session.NewBuilderFromSignal(a.peer, addr, store.SignalProtobufSerializer)
	cipher := session.NewCipher(builder, addr)
	var plain []byte
	var err error
	switch typ {
	case "pkmsg":
		var msg *protocol.PreKeySignalMessage
		if msg, err = protocol.NewPreKeySignalMessageFromBytes(data, store.SignalProtobufSerializer.PreKeySignalMessage, store.SignalProtobufSerializer.SignalMessage); err == nil {
			plain, err = cipher.DecryptMessage(ctx, msg)
		}
	case "msg":
		var msg *protocol.SignalMessage
		if msg, err = protocol.NewSignalMessageFromBytes(data, store.SignalProtobufSerializer.SignalMessage); err == nil {
			plain, err = cipher.Decrypt(ctx, msg)
		}
	default:
		return nil, fmt.Errorf("unsupported encryption type %q", typ)
	}
	if err != nil {
		return nil, err
	}
	if plain, err = unpad(plain); err != nil {
		return nil, err
	}
	var msg waE2E.Message
	if err := proto.Unmarshal(plain, &msg); err != nil {
		return nil, err
	}
	return &msg, nil
}

// unpad strips whatsmeow's padding: N copies of the byte N, 1 ≤ N ≤ 15.
func unpad(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, errors.New("empty plaintext")
	}
	n := int(b[len(b)-1])
	if n == 0 || n > 15 || n > len(b) {
		return nil, errors.New("bad padding")
	}
	return b[:len(b)-n], nil
}

// messageText is the text a person would read: the conversation, an
// extended text, or a media caption.
func messageText(m *waE2E.Message) string {
	switch {
	case m.GetConversation() != "":
		return m.GetConversation()
	case m.GetExtendedTextMessage().GetText() != "":
		return m.GetExtendedTextMessage().GetText()
	case m.GetImageMessage().GetCaption() != "":
		return m.GetImageMessage().GetCaption()
	case m.GetVideoMessage().GetCaption() != "":
		return m.GetVideoMessage().GetCaption()
	case m.GetDocumentMessage().GetCaption() != "":
		return m.GetDocumentMessage().GetCaption()
	}
	return ""
}
