package wasim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"

	"github.com/gowa-dev/gowa/domain"
)

// Scan makes phone scan the text of a QR code a device shows, and links
// that device to the account. It returns once the device has accepted the
// link (before it logs in), with the device's JID. A text that is not a
// WhatsApp QR code is EINVALID; a code no connection shows (any more) is
// ECONFLICT.
func (s *Server) Scan(ctx context.Context, phone, qr string) (string, error) {
	a, err := s.world.account(phone)
	if err != nil {
		return "", err
	}
	q, err := parseQR(qr)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	c := s.qrRefs[q.ref]
	if c != nil && c.noiseKey != q.noiseKey {
		s.mu.Unlock()
		return "", domain.Errorf(domain.EINVALID, "the QR code does not match the device showing it")
	}
	if c != nil {
		s.takeRefsLocked(c) // one phone links this device, once
	}
	s.mu.Unlock()
	if c == nil {
		return "", domain.Errorf(domain.ECONFLICT, "the QR code is not (or no longer) waiting to be scanned")
	}
	if q.clientType != "" {
		c.log.Debug("wasim: QR scanned", "client_type", string(q.clientType))
	}
	return s.link(ctx, a, c, q.identity, q.advSecret)
}

// takeRefsLocked withdraws the QR refs and idle pairing-code requests of
// c: once one phone links a device, no other may.
func (s *Server) takeRefsLocked(c *conn) {
	for ref, rc := range s.qrRefs {
		if rc == c {
			delete(s.qrRefs, ref)
		}
	}
	for phone, r := range s.codeReqs {
		if r.conn == c && r.finish == nil {
			delete(s.codeReqs, phone)
		}
	}
}

// link finishes linking the device on registration connection c to account
// a: it sends pair-success with a device identity signed by the phone,
// verifies the device's counter-signature, records the device and sends
// the 515 restart after which the client logs in. It returns the new
// device's JID.
func (s *Server) link(ctx context.Context, a *account, c *conn, identity [32]byte, advSecret []byte) (string, error) {
	reg, ok := c.parseRegistration()
	if !ok || reg.identity != identity {
		return "", domain.Errorf(domain.EINVALID, "the device's identity key does not match its registration")
	}
	s.mu.Lock()
	busy := c.linking
	c.linking = true
	s.mu.Unlock()
	if busy {
		return "", domain.Errorf(domain.ECONFLICT, "the device is being linked already")
	}
	w := s.world
	w.mu.Lock()
	index := a.nextDevice
	a.nextDevice++
	err := w.saveAccount(ctx, a)
	w.mu.Unlock()
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "saving the phone")
	}
	jid := types.NewADJID(a.phone, 0, uint8(index))
	lid := types.JID{User: a.lidUser, Server: types.HiddenUserServer, Device: uint16(index)}

	details, err := proto.Marshal(&waAdv.ADVDeviceIdentity{
		RawID:       proto.Uint32(uint32(index)),
		Timestamp:   proto.Uint64(uint64(time.Now().Unix())),
		KeyIndex:    proto.Uint32(uint32(index)),
		AccountType: waAdv.ADVEncryptionType_E2EE.Enum(),
		DeviceType:  waAdv.ADVEncryptionType_E2EE.Enum(),
	})
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "building the device identity")
	}
	signed, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentity{
		Details:             details,
		AccountSignatureKey: a.identity.Pub[:],
		AccountSignature:    sign(a.identity, concat(whatsmeow.AdvAccountSignaturePrefix, details, identity[:])),
	})
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "building the device identity")
	}
	mac := hmac.New(sha256.New, advSecret)
	mac.Write(signed)
	container, err := proto.Marshal(&waAdv.ADVSignedDeviceIdentityHMAC{Details: signed, HMAC: mac.Sum(nil)})
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "building the device identity")
	}

	resp, err := c.request(ctx, waBinary.Node{
		Tag:   "iq",
		Attrs: waBinary.Attrs{"type": "set", "xmlns": "md", "from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "pair-success", Content: []waBinary.Node{
			{Tag: "device-identity", Content: container},
			{Tag: "platform", Attrs: waBinary.Attrs{"name": "android"}},
			{Tag: "device", Attrs: waBinary.Attrs{"jid": jid, "lid": lid}},
		}}},
	})
	if err != nil {
		return "", linkErr(err)
	}
	if typ, _ := resp.Attrs["type"].(string); typ != "result" {
		c.log.Info("wasim: device rejected pairing", "answer", resp.String())
		return "", domain.Errorf(domain.ECONFLICT, "the device rejected the link")
	}
	signedBack, ok := resp.GetOptionalChildByTag("pair-device-sign", "device-identity")
	var back waAdv.ADVSignedDeviceIdentity
	if !ok || proto.Unmarshal(content(signedBack), &back) != nil || !bytes.Equal(back.GetDetails(), details) ||
		!verify(identity[:], concat(whatsmeow.AdvDeviceSignaturePrefix, details, identity[:], a.identity.Pub[:]), back.GetDeviceSignature()) {
		return "", domain.Errorf(domain.ECONFLICT, "the device's signature does not verify")
	}

	d := &device{
		jid: jid, lid: lid, noiseKey: c.noiseKey, identity: identity, regID: reg.regID,
		skeyID: reg.skeyID, skeyPub: reg.skeyPub, skeySig: reg.skeySig,
		linkedAt: time.Now(),
	}
	w.mu.Lock()
	w.devices[jid.String()] = d
	err = w.saveDevice(ctx, a.phone, d)
	w.mu.Unlock()
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "saving the device")
	}
	s.log.Info("wasim: device linked", "device", jid.String())
	// 515 makes the client reconnect, now with a login payload.
	if err := c.send(waBinary.Node{Tag: "stream:error", Attrs: waBinary.Attrs{"code": "515"}}); err != nil {
		c.log.Debug("wasim: send 515", "err", err)
	}
	return jid.String(), nil
}

// linkErr maps a failed wait for the device to a domain error.
func linkErr(err error) error {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return domain.Wrap(domain.ETIMEOUT, err, "the device did not complete linking in time")
	case errors.Is(err, context.Canceled):
		return domain.Wrap(domain.ETIMEOUT, err, "linking was cancelled")
	case errors.Is(err, errConnClosed):
		return domain.Wrap(domain.ECONFLICT, err, "the device disconnected while linking")
	default:
		return domain.Wrap(domain.EINTERNAL, err, "linking failed")
	}
}

func concat(parts ...[]byte) []byte {
	var out []byte
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
