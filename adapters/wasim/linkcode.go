package wasim

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"strings"
	"time"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/hkdfutil"
	"go.mau.fi/whatsmeow/util/keys"
	"golang.org/x/crypto/curve25519"

	"github.com/gowa-dev/gowa/domain"
)

// codeAlphabet is the base32 alphabet of WhatsApp pairing codes.
const codeAlphabet = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"

// codeIterations is the PBKDF2 work factor whatsmeow writes as 2<<16.
const codeIterations = 2 << 16

// codeRequest is a pairing code a registration connection asked for
// (companion_hello), waiting for the account's phone to enter it.
type codeRequest struct {
	conn       *conn
	ref        []byte
	wrappedEph []byte // the device's ephemeral key, wrapped with the code
	// finish receives the device's companion_finish while a phone is
	// entering the code; nil otherwise. Guarded by Server.mu.
	finish chan waBinary.Node
}

// handleLinkCode serves both stages of pairing-code linking the device
// drives: companion_hello registers a request for a phone number, and
// companion_finish carries the key bundle the entering phone waits for.
func (c *conn) handleLinkCode(req *waBinary.Node, reg waBinary.Node) {
	stage, _ := reg.Attrs["stage"].(string)
	switch stage {
	case "companion_hello":
		c.companionHello(req, reg)
	case "companion_finish":
		c.companionFinish(req, reg)
	default:
		c.replyError(req, 400, "bad-request")
	}
}

func (c *conn) companionHello(req *waBinary.Node, reg waBinary.Node) {
	jid, ok := reg.Attrs["jid"].(types.JID)
	wrapped := content(reg.GetChildByTag("link_code_pairing_wrapped_companion_ephemeral_pub"))
	authKey := content(reg.GetChildByTag("companion_server_auth_key_pub"))
	if !ok || c.payload.GetDevicePairingData() == nil || len(wrapped) != 80 || len(authKey) != 32 {
		c.replyError(req, 400, "bad-request")
		return
	}
	if subtle.ConstantTimeCompare(authKey, c.noiseKey[:]) != 1 {
		c.replyError(req, 401, "not-authorized")
		return
	}
	phone, err := domain.NormalizePhone(jid.User)
	if err != nil {
		c.replyError(req, 400, "bad-request")
		return
	}
	r := &codeRequest{conn: c, ref: []byte(newRef()), wrappedEph: wrapped}
	s := c.srv
	s.mu.Lock()
	if old := s.codeReqs[phone]; old != nil && old.finish != nil {
		s.mu.Unlock()
		c.replyError(req, 409, "conflict") // a phone is entering the previous code right now
		return
	}
	s.codeReqs[phone] = r // the latest request for a number wins, as a new code does on WhatsApp
	s.mu.Unlock()
	c.log.Info("wasim: pairing code requested", "phone", phone)
	c.reply(req, waBinary.Node{Tag: "link_code_companion_reg", Content: []waBinary.Node{
		{Tag: "link_code_pairing_ref", Content: r.ref},
	}})
}

func (c *conn) companionFinish(req *waBinary.Node, reg waBinary.Node) {
	ref := content(reg.GetChildByTag("link_code_pairing_ref"))
	s := c.srv
	s.mu.Lock()
	var waiting chan waBinary.Node
	for _, r := range s.codeReqs {
		if r.conn == c && string(r.ref) == string(ref) {
			waiting = r.finish
		}
	}
	s.mu.Unlock()
	if waiting == nil {
		c.replyError(req, 404, "item-not-found")
		return
	}
	c.reply(req)
	select {
	case waiting <- reg:
	default: // the phone already has an answer for this attempt
	}
}

// EnterCode makes phone enter a pairing code that a device requested for
// its number, and links that device. It returns once the device has
// accepted the link, with its JID. A malformed or wrong code is EINVALID
// (a wrong one may be retried); a number no device asked a code for is
// ECONFLICT.
func (s *Server) EnterCode(ctx context.Context, phone, code string) (string, error) {
	a, err := s.world.account(phone)
	if err != nil {
		return "", err
	}
	code = strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(strings.TrimSpace(code)))
	if len(code) != 8 || strings.Trim(code, codeAlphabet) != "" {
		return "", domain.Errorf(domain.EINVALID, "a pairing code is 8 letters and digits, like ABCD-1234")
	}
	finish := make(chan waBinary.Node, 1)
	s.mu.Lock()
	r := s.codeReqs[a.phone]
	switch {
	case r == nil:
		s.mu.Unlock()
		return "", domain.Errorf(domain.ECONFLICT, "no device is waiting for a pairing code for %s", a.phone)
	case r.finish != nil:
		s.mu.Unlock()
		return "", domain.Errorf(domain.ECONFLICT, "the code for %s is being entered already", a.phone)
	}
	r.finish = finish
	s.mu.Unlock()
	done := false
	defer func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if done {
			if s.codeReqs[a.phone] == r {
				delete(s.codeReqs, a.phone)
			}
			s.takeRefsLocked(r.conn)
		} else {
			r.finish = nil // a wrong code may be retried
		}
	}()

	companionEph := unwrapKey(code, r.wrappedEph)
	primaryEph := keys.NewKeyPair()
	wrapped, err := wrapKey(code, primaryEph.Pub[:])
	if err != nil {
		return "", domain.Wrap(domain.EINTERNAL, err, "wrapping the phone's key")
	}
	if err := r.conn.send(waBinary.Node{
		Tag: "notification",
		Attrs: waBinary.Attrs{
			"from": types.ServerJID, "type": "link_code_companion_reg",
			"id": r.conn.nextID(), "t": time.Now().Unix(),
		},
		Content: []waBinary.Node{{Tag: "link_code_companion_reg", Content: []waBinary.Node{
			{Tag: "link_code_pairing_ref", Content: r.ref},
			{Tag: "link_code_pairing_wrapped_primary_ephemeral_pub", Content: wrapped},
			{Tag: "primary_identity_pub", Content: a.identity.Pub[:]},
		}}},
	}); err != nil {
		return "", linkErr(errConnClosed)
	}
	var fin waBinary.Node
	t := time.NewTimer(requestTimeout)
	defer t.Stop()
	select {
	case fin = <-finish:
	case <-t.C:
		return "", linkErr(context.DeadlineExceeded)
	case <-ctx.Done():
		return "", linkErr(ctx.Err())
	case <-r.conn.ctx.Done():
		return "", linkErr(errConnClosed)
	}

	identity, advSecret, ok := openKeyBundle(a.identity, primaryEph, companionEph, content(fin.GetChildByTag("link_code_pairing_wrapped_key_bundle")))
	if !ok {
		s.log.Info("wasim: pairing code did not match", "phone", a.phone)
		return "", domain.Errorf(domain.EINVALID, "wrong pairing code")
	}
	if claimed := content(fin.GetChildByTag("companion_identity_public")); subtle.ConstantTimeCompare(claimed, identity[:]) != 1 {
		return "", domain.Errorf(domain.EINVALID, "the device's identity does not match its key bundle")
	}
	done = true
	return s.link(ctx, a, r.conn, identity, advSecret)
}

// openKeyBundle decrypts the 156-byte key bundle of companion_finish and
// derives the adv secret both sides now share. It fails when the code was
// wrong, since the ephemeral keys then do not agree.
func openKeyBundle(phoneIdentity, primaryEph *keys.KeyPair, companionEph, bundle []byte) (identity [32]byte, advSecret []byte, ok bool) {
	if len(bundle) != 32+12+96+16 {
		return identity, nil, false
	}
	ephShared, err := curve25519.X25519(primaryEph.Priv[:], companionEph)
	if err != nil {
		return identity, nil, false
	}
	key := hkdfutil.SHA256(ephShared, bundle[:32], []byte("link_code_pairing_key_bundle_encryption_key"), 32)
	block, err := aes.NewCipher(key)
	if err != nil {
		return identity, nil, false
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return identity, nil, false
	}
	plain, err := gcm.Open(nil, bundle[32:44], bundle[44:], nil)
	if err != nil || len(plain) != 96 || subtle.ConstantTimeCompare(plain[32:64], phoneIdentity.Pub[:]) != 1 {
		return identity, nil, false
	}
	identity = [32]byte(plain[:32])
	identShared, err := curve25519.X25519(phoneIdentity.Priv[:], identity[:])
	if err != nil {
		return identity, nil, false
	}
	advSecret = hkdfutil.SHA256(concat(ephShared, identShared, plain[64:96]), nil, []byte("adv_secret"), 32)
	return identity, advSecret, true
}

// wrapKey hides a 32-byte public key under the pairing code:
// salt(32) ‖ iv(16) ‖ AES-256-CTR(PBKDF2(code, salt), iv, key).
func wrapKey(code string, pub []byte) ([]byte, error) {
	out := make([]byte, 80)
	if _, err := rand.Read(out[:48]); err != nil {
		return nil, err
	}
	ctr(code, out[:32], out[32:48], out[48:], pub)
	return out, nil
}

// unwrapKey reverses wrapKey. CTR has no integrity check: a wrong code
// gives a wrong key, which shows only when the key bundle fails to open.
func unwrapKey(code string, wrapped []byte) []byte {
	out := make([]byte, 32)
	ctr(code, wrapped[:32], wrapped[32:48], out, wrapped[48:80])
	return out
}

func ctr(code string, salt, iv, dst, src []byte) {
	key, err := pbkdf2.Key(sha256.New, code, salt, codeIterations, 32)
	if err != nil {
		panic(err) // only for lengths FIPS mode forbids
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	cipher.NewCTR(block, iv).XORKeyStream(dst, src)
}
