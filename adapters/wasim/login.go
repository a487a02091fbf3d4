package wasim

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"strconv"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// registration is what an unpaired client announces in its payload: the
// Signal keys the server will later hand out as this device's bundle.
type registration struct {
	regID    uint32
	identity [32]byte
	skeyID   uint32
	skeyPub  [32]byte
	skeySig  [64]byte
}

// start answers the client payload: a registration gets QR refs, a login
// gets success or failure.
func (c *conn) start() {
	if reg := c.payload.GetDevicePairingData(); reg != nil {
		c.startRegistration()
		return
	}
	jid := types.NewADJID(strconv.FormatUint(c.payload.GetUsername(), 10), 0, uint8(c.payload.GetDevice()))
	c.login(jid)
}

// parseRegistration reads the registration data of the payload.
func (c *conn) parseRegistration() (registration, bool) {
	d := c.payload.GetDevicePairingData()
	var r registration
	if len(d.GetERegid()) != 4 || len(d.GetEIdent()) != 32 || len(d.GetESkeyID()) != 3 ||
		len(d.GetESkeyVal()) != 32 || len(d.GetESkeySig()) != 64 {
		return r, false
	}
	r.regID = binary.BigEndian.Uint32(d.GetERegid())
	r.identity = [32]byte(d.GetEIdent())
	id := d.GetESkeyID()
	r.skeyID = uint32(id[0])<<16 | uint32(id[1])<<8 | uint32(id[2])
	r.skeyPub = [32]byte(d.GetESkeyVal())
	r.skeySig = [64]byte(d.GetESkeySig())
	return r, true
}

// startRegistration sends pair-device with six QR refs, as the real server
// does; the client shows one QR code per ref.
func (c *conn) startRegistration() {
	if _, ok := c.parseRegistration(); !ok {
		c.log.Warn("wasim: malformed registration payload")
		c.closeNow()
		return
	}
	refs := make([]waBinary.Node, 6)
	c.srv.mu.Lock()
	for i := range refs {
		ref := newRef()
		c.srv.qrRefs[ref] = c
		refs[i] = waBinary.Node{Tag: "ref", Content: []byte(ref)}
	}
	c.srv.mu.Unlock()
	c.log.Debug("wasim: registration connection, sent pair-device")
	if err := c.send(waBinary.Node{
		Tag:     "iq",
		Attrs:   waBinary.Attrs{"id": "srv-pair-device", "type": "set", "xmlns": "md", "from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "pair-device", Content: refs}},
	}); err != nil {
		c.log.Debug("wasim: send pair-device", "err", err)
	}
}

// newRef makes an opaque QR ref shaped like the real "2@…" ones.
func newRef() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return "2@" + base64.RawURLEncoding.EncodeToString(b)
}

// login accepts a paired device whose record exists, is not removed and
// holds the Noise key the client just proved; any other gets failure 401,
// which makes whatsmeow delete its session. A second connection of the same
// device replaces the first, which is told so and closed.
func (c *conn) login(jid types.JID) {
	w := c.srv.world
	w.mu.Lock()
	d := w.devices[jid.String()]
	ok := d != nil && !d.removed && d.noiseKey == c.noiseKey
	var lid types.JID
	if ok {
		lid = d.lid
	}
	w.mu.Unlock()
	if !ok {
		c.refuseLogin(jid)
		return
	}
	// Taking over the device and retiring its older connections is one
	// step, so that two logins racing each other leave exactly one. The
	// device is checked again inside it: a RemoveDevice that ran since
	// would otherwise find no connection to close.
	var old []*conn
	c.srv.mu.Lock()
	w.mu.Lock()
	removed := d.removed
	w.mu.Unlock()
	if removed {
		c.srv.mu.Unlock()
		c.refuseLogin(jid)
		return
	}
	live := 1 // this one, and the older ones it replaces that are still live
	for o := range c.srv.conns {
		if o != c && o.deviceJID() == jid.String() {
			if !o.isClosing() {
				live++
			}
			o.markClosing()
			old = append(old, o)
		}
	}
	c.setDevice(jid.String())
	c.srv.maxByDevice[jid.String()] = max(c.srv.maxByDevice[jid.String()], live)
	c.srv.mu.Unlock()
	for _, o := range old {
		c.log.Info("wasim: replacing older connection", "device", jid.String(), "old", o.id)
		if err := o.send(waBinary.Node{Tag: "stream:error", Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "replaced"}}}}); err != nil {
			o.log.Debug("wasim: send replaced", "err", err)
		}
		o.closeSoon()
	}
	now := time.Now().Unix()
	c.log.Info("wasim: logged in", "device", jid.String())
	if err := c.send(waBinary.Node{Tag: "success", Attrs: waBinary.Attrs{
		"t": now, "props": 1, "abprops": 1, "location": "sim", "creation": now, "lid": lid,
	}}); err != nil {
		c.log.Debug("wasim: send success", "err", err)
	}
	c.deliverOffline()
}

// refuseLogin answers a login with failure 401, which makes whatsmeow
// delete its session, and closes the connection.
func (c *conn) refuseLogin(jid types.JID) {
	c.log.Info("wasim: login refused", "device", jid.String())
	if err := c.send(waBinary.Node{Tag: "failure", Attrs: waBinary.Attrs{"reason": 401, "location": "sim"}}); err != nil {
		c.log.Debug("wasim: send failure", "err", err)
	}
	c.closeSoon()
}
