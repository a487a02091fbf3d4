package wasim

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"strings"
	"sync"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/libsignal/keys/identity"
	"go.mau.fi/libsignal/keys/prekey"
	"go.mau.fi/libsignal/protocol"
	"go.mau.fi/libsignal/session"
	"go.mau.fi/libsignal/util/optional"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/gowa-dev/gowa/domain"
)

// receiptWait bounds how long a phone's send waits for the online devices
// to acknowledge the message with a delivery receipt.
const receiptWait = 10 * time.Second

// SendFromPhone makes phone send text to another account (a phone number
// or a user JID), as WhatsApp does: the message is encrypted, in the
// phone's own Signal store, to every linked device of the recipient, and a
// DeviceSentMessage copy to every other linked device of the sender (which
// see it as from_me). Devices online get it at once and the call waits for
// their delivery receipts; devices offline get it when they next log in
// (held in memory, so a restart of the simulator loses it). Phones receive
// nothing here: the simulator plays them and only companions decrypt.
func (s *Server) SendFromPhone(ctx context.Context, phone, to, text string) (sandbox.Sent, error) {
	if text == "" {
		return sandbox.Sent{}, domain.Errorf(domain.EINVALID, "message must not be empty")
	}
	from, err := s.world.account(phone)
	if err != nil {
		return sandbox.Sent{}, err
	}
	rcptPhone := strings.TrimSuffix(to, "@"+types.DefaultUserServer)
	rcpt, err := s.world.account(rcptPhone)
	if err != nil {
		return sandbox.Sent{}, err
	}
	id := newMessageID()
	now := time.Unix(time.Now().Unix(), 0)
	out := sandbox.Sent{ID: id, Timestamp: now}

	plain, err := proto.Marshal(&waE2E.Message{Conversation: proto.String(text)})
	if err != nil {
		return out, domain.Wrap(domain.EINTERNAL, err, "encode the message")
	}
	copyPlain, err := proto.Marshal(&waE2E.Message{DeviceSentMessage: &waE2E.DeviceSentMessage{
		DestinationJID: proto.String(rcpt.jid().String()),
		Message:        &waE2E.Message{Conversation: proto.String(text)},
	}})
	if err != nil {
		return out, domain.Wrap(domain.EINTERNAL, err, "encode the message")
	}

	type target struct {
		dev   *device
		plain []byte
		attrs waBinary.Attrs
	}
	var targets []target
	for _, d := range s.world.companions(rcpt.phone) {
		targets = append(targets, target{d, plain, nil})
	}
	if rcpt.phone != from.phone {
		for _, d := range s.world.companions(from.phone) {
			targets = append(targets, target{d, copyPlain, waBinary.Attrs{"recipient": rcpt.jid()}})
		}
	}

	var waits []<-chan struct{}
	for _, t := range targets {
		enc, err := s.encryptFor(ctx, from, t.dev, t.plain)
		if err != nil {
			return out, domain.Wrap(domain.EINTERNAL, err, "encrypt for "+t.dev.jid.String())
		}
		node := waBinary.Node{Tag: "message", Attrs: waBinary.Attrs{
			"id": id, "from": from.jid(), "type": "text", "t": now.Unix(), "notify": from.pushName,
		}, Content: []waBinary.Node{enc}}
		for k, v := range t.attrs {
			node.Attrs[k] = v
		}
		jid := t.dev.jid.String()
		conns := s.connsOf(jid)
		if len(conns) == 0 {
			s.queueOffline(jid, node)
			out.Offline = append(out.Offline, jid)
			continue
		}
		waits = append(waits, s.receipts.expect(id, jid))
		if err := conns[0].send(node); err != nil {
			s.queueOffline(jid, node)
			out.Offline = append(out.Offline, jid)
			continue
		}
		out.Delivered = append(out.Delivered, jid)
	}
	wctx, cancel := context.WithTimeout(ctx, receiptWait)
	defer cancel()
	for _, w := range waits {
		select {
		case <-w:
		case <-wctx.Done():
			return out, domain.Errorf(domain.ETIMEOUT, "a linked device did not acknowledge message %s in time", id)
		}
	}
	return out, nil
}

// encryptFor encrypts plain from account a's phone to companion d, starting
// a Signal session from d's prekey bundle when the phone has none with it.
func (s *Server) encryptFor(ctx context.Context, a *account, d *device, plain []byte) (waBinary.Node, error) {
	addr := d.jid.SignalAddress()
	a.signalMu.Lock()
	defer a.signalMu.Unlock()
	builder := session.NewBuilderFromSignal(a.peer, addr, store.SignalProtobufSerializer)
	has, err := a.peer.ContainsSession(ctx, addr)
	if err != nil {
		return waBinary.Node{}, err
	}
	if !has {
		bundle, err := s.bundleOf(ctx, d)
		if err != nil {
			return waBinary.Node{}, err
		}
		if err := builder.ProcessBundle(ctx, bundle); err != nil {
			return waBinary.Node{}, fmt.Errorf("process prekey bundle: %w", err)
		}
	}
	cipher := session.NewCipher(builder, addr)
	ct, err := cipher.Encrypt(ctx, pad(plain))
	if err != nil {
		return waBinary.Node{}, err
	}
	typ := "msg"
	if ct.Type() == protocol.PREKEY_TYPE {
		typ = "pkmsg"
	}
	return waBinary.Node{Tag: "enc", Attrs: waBinary.Attrs{"v": "2", "type": typ}, Content: ct.Serialize()}, nil
}

// bundleOf hands out d's prekey bundle, with one of its one-time prekeys
// when it has any left, as the server does for any sender.
func (s *Server) bundleOf(ctx context.Context, d *device) (*prekey.Bundle, error) {
	w := s.world
	w.mu.Lock()
	id, pub, ok, err := w.popPreKey(ctx, d)
	regID, ident, skeyID, skeyPub, skeySig := d.regID, d.identity, d.skeyID, d.skeyPub, d.skeySig
	w.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("hand out a prekey: %w", err)
	}
	idKey := identity.NewKey(ecc.NewDjbECPublicKey(ident))
	if !ok {
		return prekey.NewBundle(regID, uint32(d.jid.Device), optional.NewEmptyUint32(), skeyID,
			nil, ecc.NewDjbECPublicKey(skeyPub), skeySig, idKey), nil
	}
	return prekey.NewBundle(regID, uint32(d.jid.Device), optional.NewOptionalUint32(id), skeyID,
		ecc.NewDjbECPublicKey(pub), ecc.NewDjbECPublicKey(skeyPub), skeySig, idKey), nil
}

// pad adds the padding whatsmeow strips: N copies of the byte N, 1 ≤ N ≤ 15.
func pad(b []byte) []byte {
	var r [1]byte
	_, _ = rand.Read(r[:])
	n := r[0]&0x0f | 1
	out := make([]byte, len(b), len(b)+int(n))
	copy(out, b)
	for range n {
		out = append(out, n)
	}
	return out
}

// newMessageID makes an id shaped like a phone's.
func newMessageID() string {
	b := make([]byte, 10)
	_, _ = rand.Read(b)
	return "3A" + strings.ToUpper(hex.EncodeToString(b))
}

// receiptWaiters matches delivery receipts to the sends waiting for them.
type receiptWaiters struct {
	mu      sync.Mutex
	waiting map[string]chan struct{} // message id + " " + device JID
}

func (r *receiptWaiters) expect(id, jid string) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiting == nil {
		r.waiting = map[string]chan struct{}{}
	}
	ch := make(chan struct{})
	r.waiting[id+" "+jid] = ch
	return ch
}

func (r *receiptWaiters) done(id, jid string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ch, ok := r.waiting[id+" "+jid]; ok {
		close(ch)
		delete(r.waiting, id+" "+jid)
	}
}

// handleReceipt notes a device's receipt for a message a phone sent.
func (c *conn) handleReceipt(node *waBinary.Node) {
	id, _ := node.Attrs["id"].(string)
	if id == "" || c.deviceJID() == "" {
		return
	}
	c.srv.receipts.done(id, c.deviceJID())
}

// queueOffline keeps a message for a device that is offline, for its next
// login.
func (s *Server) queueOffline(jid string, node waBinary.Node) {
	s.offlineMu.Lock()
	defer s.offlineMu.Unlock()
	if s.offline == nil {
		s.offline = map[string][]waBinary.Node{}
	}
	s.offline[jid] = append(s.offline[jid], node)
}

// deliverOffline sends a device that just logged in what was sent to it
// while it was away, in order.
func (c *conn) deliverOffline() {
	jid := c.deviceJID()
	c.srv.offlineMu.Lock()
	queued := c.srv.offline[jid]
	delete(c.srv.offline, jid)
	c.srv.offlineMu.Unlock()
	for i, node := range queued {
		if err := c.send(node); err != nil {
			c.srv.offlineMu.Lock()
			c.srv.offline[jid] = append(queued[i:], c.srv.offline[jid]...)
			c.srv.offlineMu.Unlock()
			return
		}
	}
}
