package wasim

import (
	"encoding/binary"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// answerPreKeyCount tells a device how many one-time prekeys the server
// still holds for it. whatsmeow uploads more when this is low, so it must
// reflect what is stored.
func (c *conn) answerPreKeyCount(req *waBinary.Node) {
	n := 0
	w := c.srv.world
	w.mu.Lock()
	if d := w.devices[c.deviceJID()]; d != nil {
		n = d.prekeys
	}
	w.mu.Unlock()
	c.reply(req, waBinary.Node{Tag: "count", Attrs: waBinary.Attrs{"value": n}})
}

// storePreKeys keeps the one-time prekeys a logged-in device uploads.
func (c *conn) storePreKeys(req *waBinary.Node) {
	jid := c.deviceJID()
	list, ok := req.GetOptionalChildByTag("list")
	if jid == "" || !ok {
		c.reply(req)
		return
	}
	uploaded := map[uint32][32]byte{}
	for _, key := range list.GetChildrenByTag("key") {
		id := content(key.GetChildByTag("id"))
		pub := content(key.GetChildByTag("value"))
		if len(id) != 3 || len(pub) != 32 {
			c.replyError(req, 400, "bad-request")
			return
		}
		uploaded[uint24(id)] = [32]byte(pub)
	}
	// Answered after the world's lock is released: a slow socket must not
	// hold up every other phone and connection.
	switch code, stored := c.savePreKeys(jid, uploaded); code {
	case 0:
		c.log.Debug("wasim: prekeys uploaded", "device", jid, "count", len(uploaded), "stored", stored)
		c.reply(req)
	case 404:
		c.replyError(req, 404, "item-not-found")
	default:
		c.replyError(req, 500, "internal-server-error")
	}
}

// savePreKeys stores uploaded for device jid and returns 0 and how many it
// now holds, or the error status to answer.
func (c *conn) savePreKeys(jid string, uploaded map[uint32][32]byte) (status, stored int) {
	w := c.srv.world
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.devices[jid]
	if d == nil || d.removed {
		return 404, 0
	}
	n, err := w.savePreKeys(c.ctx, d.jid, uploaded)
	if err != nil {
		c.log.Error("wasim: save prekeys", "device", jid, "err", err)
		return 500, 0
	}
	d.prekeys = n
	return 0, n
}

// answerBundles serves a prekey bundle for each requested device: a
// phone's from its Signal store, a companion's from its registration and
// uploads. Every bundle gets a one-time prekey no one else will get:
// libsignal deletes a prekey once used, so a reused one would make the
// second sender's message undecryptable.
func (c *conn) answerBundles(req *waBinary.Node, keyNode waBinary.Node) {
	var users []waBinary.Node
	var low []types.JID
	for _, u := range keyNode.GetChildrenByTag("user") {
		jid, ok := u.Attrs["jid"].(types.JID)
		if !ok {
			continue
		}
		b, left := c.bundle(jid)
		users = append(users, b)
		if left >= 0 && left < whatsmeow.MinPreKeyCount {
			low = append(low, jid)
		}
	}
	c.reply(req, waBinary.Node{Tag: "list", Content: users})
	for _, jid := range low {
		c.srv.askForPreKeys(jid)
	}
}

// askForPreKeys tells the connected device jid that the server is running
// out of its one-time prekeys, as WhatsApp does; whatsmeow then uploads
// more (it asks for the count first, which must be low too).
func (s *Server) askForPreKeys(jid types.JID) {
	w := s.world
	w.mu.Lock()
	n := 0
	if d := w.devices[jid.String()]; d != nil {
		n = d.prekeys
	}
	w.mu.Unlock()
	for _, c := range s.connsOf(jid.String()) {
		if err := c.send(waBinary.Node{
			Tag:     "notification",
			Attrs:   waBinary.Attrs{"from": types.ServerJID, "type": "encrypt", "id": c.nextID(), "t": time.Now().Unix()},
			Content: []waBinary.Node{{Tag: "count", Attrs: waBinary.Attrs{"value": n}}},
		}); err != nil {
			c.log.Debug("wasim: send prekey notification", "err", err)
		}
	}
}

// bundle returns the bundle node of jid, and how many one-time prekeys
// the server has left for it (-1 for a phone, which makes them on demand).
func (c *conn) bundle(jid types.JID) (waBinary.Node, int) {
	notFound := waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: []waBinary.Node{
		{Tag: "error", Attrs: waBinary.Attrs{"code": 404, "text": "item-not-found"}},
	}}
	w := c.srv.world
	pn := w.toPN(jid) // the bundle names the device as asked, PN or LID
	if pn.Server != types.DefaultUserServer {
		return notFound, -1
	}
	if pn.Device == 0 {
		w.mu.Lock()
		a := w.accounts[pn.User]
		w.mu.Unlock()
		if a == nil {
			return notFound, -1
		}
		return c.phoneBundle(jid, a), -1
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.devices[pn.String()]
	if d == nil || d.removed {
		return notFound, -1
	}
	b := bundleNode(jid, d.regID, d.identity, d.skeyID, d.skeyPub, d.skeySig)
	id, pub, ok, err := w.popPreKey(c.ctx, d)
	if err != nil {
		c.log.Error("wasim: hand out a prekey", "device", jid.String(), "err", err)
	}
	if ok {
		b.Content = append(b.Content.([]waBinary.Node), preKeyNode("key", id, pub))
	}
	return b, d.prekeys
}

// phoneBundle makes a fresh one-time prekey in the phone's Signal store,
// so that the phone can decrypt the session it starts.
func (c *conn) phoneBundle(jid types.JID, a *account) waBinary.Node {
	a.signalMu.Lock()
	pk, err := a.peer.PreKeys.GenOnePreKey(c.ctx)
	a.signalMu.Unlock()
	spk := a.peer.SignedPreKey
	b := bundleNode(jid, a.peer.RegistrationID, *a.identity.Pub, spk.KeyID, *spk.Pub, *spk.Signature)
	if err != nil {
		c.log.Error("wasim: make phone prekey", "phone", a.phone, "err", err)
		return b
	}
	b.Content = append(b.Content.([]waBinary.Node), preKeyNode("key", pk.KeyID, *pk.Pub))
	return b
}

func bundleNode(jid types.JID, regID uint32, identity [32]byte, skeyID uint32, skeyPub [32]byte, skeySig [64]byte) waBinary.Node {
	reg := make([]byte, 4)
	binary.BigEndian.PutUint32(reg, regID)
	skey := preKeyNode("skey", skeyID, skeyPub)
	skey.Content = append(skey.Content.([]waBinary.Node), waBinary.Node{Tag: "signature", Content: skeySig[:]})
	return waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}, Content: []waBinary.Node{
		{Tag: "registration", Content: reg},
		{Tag: "type", Content: []byte{5}},
		{Tag: "identity", Content: identity[:]},
		skey,
	}}
}

func preKeyNode(tag string, id uint32, pub [32]byte) waBinary.Node {
	return waBinary.Node{Tag: tag, Content: []waBinary.Node{
		{Tag: "id", Content: []byte{byte(id >> 16), byte(id >> 8), byte(id)}},
		{Tag: "value", Content: pub[:]},
	}}
}

func uint24(b []byte) uint32 { return uint32(b[0])<<16 | uint32(b[1])<<8 | uint32(b[2]) }
