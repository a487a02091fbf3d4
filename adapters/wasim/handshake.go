package wasim

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"go.mau.fi/libsignal/ecc"
	"go.mau.fi/whatsmeow/proto/waCert"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/util/gcmutil"
	"go.mau.fi/whatsmeow/util/keys"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/hkdf"
	"google.golang.org/protobuf/proto"
)

// rootKey is the fake certificate root shared by every Server in the process.
// whatsmeow trusts one root through the package variable WACertPubKey, which
// cannot change while clients run, so all simulators must chain to one key.
var rootKey = sync.OnceValue(keys.NewKeyPair)

// RootPublicKey returns the process-wide fake certificate root. Set
// whatsmeow.WACertPubKey to it once, before any client connects to a Server;
// nothing in this package sets it.
func RootPublicKey() [32]byte { return *rootKey().Pub }

// Certificate lifetimes. whatsmeow rejects a noise certificate outside its
// notBefore..notAfter window, so the chain carries real dates: it is valid
// from a day before it was made (tolerating a client clock running behind)
// for certLifetime, and the Server renews it certRenewBefore its end, so a
// long-running sandbox never serves an expired one.
const (
	certBackdate    = 24 * time.Hour
	certLifetime    = 30 * 24 * time.Hour
	certRenewBefore = 24 * time.Hour
)

// certChain returns the marshalled certificate chain that binds static to
// root, valid from now-certBackdate to the returned expiry: root signs a
// fresh intermediate key, which signs the static key. This is exactly what
// whatsmeow's verifyServerCert checks.
func certChain(static, root *keys.KeyPair, now time.Time) (chain []byte, notAfter time.Time, err error) {
	inter := keys.NewKeyPair()
	const interSerial = 1
	from := now.Add(-certBackdate).Truncate(time.Second)
	until := now.Add(certLifetime).Truncate(time.Second)
	interDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(interSerial),
		IssuerSerial: proto.Uint32(0),
		Key:          inter.Pub[:],
		NotBefore:    proto.Uint64(uint64(from.Unix())),
		NotAfter:     proto.Uint64(uint64(until.Unix())),
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	leafDetails, err := proto.Marshal(&waCert.CertChain_NoiseCertificate_Details{
		Serial:       proto.Uint32(2),
		IssuerSerial: proto.Uint32(interSerial),
		Key:          static.Pub[:],
		NotBefore:    proto.Uint64(uint64(from.Unix())),
		NotAfter:     proto.Uint64(uint64(until.Unix())),
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	chain, err = proto.Marshal(&waCert.CertChain{
		Intermediate: &waCert.CertChain_NoiseCertificate{Details: interDetails, Signature: sign(root, interDetails)},
		Leaf:         &waCert.CertChain_NoiseCertificate{Details: leafDetails, Signature: sign(inter, leafDetails)},
	})
	return chain, until, err
}

// certificate returns the chain to send in a handshake at now, renewing it
// when it is about to expire.
func (s *Server) certificate(now time.Time) ([]byte, error) {
	s.certMu.Lock()
	defer s.certMu.Unlock()
	if s.cert == nil || now.After(s.certUntil.Add(-certRenewBefore)) {
		cert, until, err := certChain(s.static, s.root, now)
		if err != nil {
			return nil, err
		}
		s.cert, s.certUntil = cert, until
	}
	return s.cert, nil
}

// sign makes a Signal Curve25519 signature of msg with kp.
func sign(kp *keys.KeyPair, msg []byte) []byte {
	sig := ecc.CalculateSignature(ecc.NewDjbECPrivateKey(*kp.Priv), msg)
	return sig[:]
}

// verify checks a Signal Curve25519 signature. Signatures are randomised, so
// they must be verified, never compared.
func verify(pub []byte, msg, sig []byte) bool {
	if len(pub) != 32 || len(sig) != 64 {
		return false
	}
	return ecc.VerifySignature(ecc.NewDjbECPublicKey([32]byte(pub)), msg, [64]byte(sig))
}

// noise is the responder side of Noise_XX_25519_AESGCM_SHA256 as whatsmeow
// speaks it. whatsmeow's own socket.NoiseHandshake cannot finish as a
// responder (its chaining key is unexported), hence this small copy of the
// state machine.
type noise struct {
	hash, salt []byte
	key        cipher.AEAD
	counter    uint32
}

func newNoise(header []byte) (*noise, error) {
	start := []byte(socket.NoiseStartPattern) // exactly 32 bytes: used as-is
	key, err := gcmutil.Prepare(start)
	if err != nil {
		return nil, err
	}
	n := &noise{hash: start, salt: start, key: key}
	n.mixHash(header)
	return n, nil
}

func (n *noise) mixHash(data []byte) {
	sum := sha256.Sum256(append(append([]byte{}, n.hash...), data...))
	n.hash = sum[:]
}

func (n *noise) mixKey(priv *[32]byte, pub []byte) error {
	shared, err := curve25519.X25519(priv[:], pub)
	if err != nil {
		return err
	}
	out := make([]byte, 64)
	if _, err := io.ReadFull(hkdf.New(sha256.New, shared, n.salt, nil), out); err != nil {
		return err
	}
	n.salt = out[:32]
	n.key, err = gcmutil.Prepare(out[32:])
	n.counter = 0
	return err
}

func (n *noise) encrypt(plain []byte) []byte {
	ct := n.key.Seal(nil, nonce(n.counter), plain, n.hash)
	n.counter++
	n.mixHash(ct)
	return ct
}

func (n *noise) decrypt(ct []byte) ([]byte, error) {
	plain, err := n.key.Open(nil, nonce(n.counter), ct, n.hash)
	n.counter++
	if err != nil {
		return nil, err
	}
	n.mixHash(ct)
	return plain, nil
}

// split derives the transport ciphers: the first half of the output is the
// client→server key, the second the server→client key.
func (n *noise) split() (read, write cipher.AEAD, err error) {
	out := make([]byte, 64)
	if _, err := io.ReadFull(hkdf.New(sha256.New, nil, n.salt, nil), out); err != nil {
		return nil, nil, err
	}
	if read, err = gcmutil.Prepare(out[:32]); err != nil {
		return nil, nil, err
	}
	write, err = gcmutil.Prepare(out[32:])
	return read, write, err
}

// nonce is the 12-byte GCM nonce: 8 zero bytes, then a big-endian counter.
func nonce(counter uint32) []byte {
	iv := make([]byte, 12)
	binary.BigEndian.PutUint32(iv[8:], counter)
	return iv
}

var errHandshake = errors.New("noise handshake failed")

func handshakeErr(step string, err error) error {
	if err == nil {
		return fmt.Errorf("%w: %s", errHandshake, step)
	}
	return fmt.Errorf("%w: %s: %v", errHandshake, step, err)
}
