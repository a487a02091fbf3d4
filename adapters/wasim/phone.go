package wasim

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"

	"github.com/gowa-dev/gowa/domain"
)

// world is the simulated network's data: accounts (phones), their linked
// companion devices and what the phones received. The maps are the working
// state, written through to the database on every change; mu guards both.
type world struct {
	mu       sync.Mutex
	db       *sql.DB
	signal   *sqlstore.Container
	accounts map[string]*account // by phone digits
	byLID    map[string]string   // LID user → phone digits
	devices  map[string]*device  // by PN AD-JID string, removed ones included
}

// account is a simulated WhatsApp account: its phone is the primary device.
type account struct {
	phone      string // digits
	pushName   string
	lidUser    string
	nextDevice int // index of the next linked companion
	// identity is both the ADV account-signing key used when linking and
	// the phone's Signal identity as device 0. They must be one key: the
	// client trusts the signing key as the phone's identity at pairing.
	identity *keys.KeyPair
	// peer is the phone's Signal state, kept in the private sqlstore; it
	// serves the phone's prekey bundles and decrypts what clients send.
	peer *store.Device
	// signalMu serialises libsignal work on peer, whose session updates
	// are not atomic.
	signalMu sync.Mutex
}

func (a *account) jid() types.JID { return types.NewJID(a.phone, types.DefaultUserServer) }

// device is a companion device linked to an account.
type device struct {
	jid, lid types.JID
	noiseKey [32]byte // authenticates the device's later logins
	identity [32]byte // Signal identity public key
	regID    uint32
	skeyID   uint32
	skeyPub  [32]byte
	skeySig  [64]byte
	prekeys  int // uploaded one-time prekeys not yet handed out, kept in wasim_prekey only
	removed  bool
	linkedAt time.Time
}

func newWorld(db *sql.DB, signal *sqlstore.Container) *world {
	return &world{db: db, signal: signal, accounts: map[string]*account{}, byLID: map[string]string{}, devices: map[string]*device{}}
}

// account returns the account of phone (digits, +, or malformed).
func (w *world) account(phone string) (*account, error) {
	p, err := domain.NormalizePhone(phone)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.accounts[p]
	if a == nil {
		return nil, domain.Errorf(domain.ENOTFOUND, "no sandbox phone %s", p)
	}
	return a, nil
}

// createAccount creates phone's account, or renames the existing one when
// pushName is given.
func (w *world) createAccount(ctx context.Context, phone, pushName string) (*account, error) {
	p, err := domain.NormalizePhone(phone)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if a := w.accounts[p]; a != nil {
		if pushName != "" && pushName != a.pushName {
			a.pushName = pushName
			if err := w.saveAccount(ctx, a); err != nil {
				return nil, domain.Wrap(domain.EINTERNAL, err, "saving the phone")
			}
		}
		return a, nil
	}
	a := &account{phone: p, pushName: pushName, lidUser: randomLIDUser(), nextDevice: 1, identity: keys.NewKeyPair()}
	if err := w.saveAccount(ctx, a); err != nil {
		return nil, domain.Wrap(domain.EINTERNAL, err, "saving the phone")
	}
	if err := w.attachPeer(ctx, a); err != nil {
		return nil, domain.Wrap(domain.EINTERNAL, err, "creating the phone's Signal state")
	}
	w.addAccountLocked(a)
	return a, nil
}

// attachPeer loads the phone's Signal state as device 0, creating it with
// the account identity on first use.
func (w *world) attachPeer(ctx context.Context, a *account) error {
	jid := a.jid()
	dev, err := w.signal.GetDevice(ctx, jid)
	if err != nil {
		return err
	}
	if dev == nil {
		dev = w.signal.NewDevice()
		dev.ID = &jid
		dev.IdentityKey = a.identity
		// The signed prekey must be signed by the identity it is served with.
		dev.SignedPreKey = a.identity.CreateSignedPreKey(1)
		// sqlstore's CHECK constraints want a well-formed account identity,
		// though a phone never uses it.
		dev.Account = &waAdv.ADVSignedDeviceIdentity{
			Details:             []byte{},
			AccountSignature:    make([]byte, 64),
			AccountSignatureKey: a.identity.Pub[:],
			DeviceSignature:     make([]byte, 64),
		}
		if err := w.signal.PutDevice(ctx, dev); err != nil {
			return err
		}
	} else if *dev.IdentityKey.Pub != *a.identity.Pub {
		return fmt.Errorf("wasim: phone %s: Signal identity differs from the account identity", a.phone)
	}
	a.peer = dev
	return nil
}

// addAccountLocked makes a findable by phone number and by LID.
func (w *world) addAccountLocked(a *account) {
	w.accounts[a.phone] = a
	w.byLID[a.lidUser] = a.phone
}

// toPN maps a LID address (a user or one of its devices) to the same
// account's phone-number address; other JIDs come back unchanged. Since
// 2026 whatsmeow addresses direct messages, their device lists and prekey
// requests to LIDs; the world keeps everything by phone number.
func (w *world) toPN(jid types.JID) types.JID {
	if jid.Server != types.HiddenUserServer {
		return jid
	}
	w.mu.Lock()
	phone, ok := w.byLID[jid.User]
	w.mu.Unlock()
	if !ok {
		return jid
	}
	return types.JID{User: phone, Server: types.DefaultUserServer, Device: jid.Device}
}

// companions returns the non-removed devices of phone, oldest first.
func (w *world) companions(phone string) []*device {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*device
	for _, d := range w.devices {
		if d.jid.User == phone && !d.removed {
			out = append(out, d)
		}
	}
	slices.SortFunc(out, func(a, b *device) int { return cmp.Compare(a.jid.Device, b.jid.Device) })
	return out
}

// liveDevice returns the non-removed device with that JID, or nil.
func (w *world) liveDevice(jid types.JID) *device {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.devices[jid.String()]
	if d == nil || d.removed {
		return nil
	}
	return d
}

// markRemoved unlinks a device; its next login gets failure 401.
func (w *world) markRemoved(ctx context.Context, jid types.JID) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	d := w.devices[jid.String()]
	if d == nil || d.removed {
		return false, nil
	}
	d.removed = true
	d.prekeys = 0
	if _, err := w.db.ExecContext(ctx, `DELETE FROM wasim_prekey WHERE device = ?`, jid.String()); err != nil {
		return true, err
	}
	return true, w.saveDevice(ctx, jid.User, d)
}

// randomLIDUser makes a 15-digit LID user, the shape real ones have.
func randomLIDUser() string {
	n, err := rand.Int(rand.Reader, big.NewInt(9e13))
	if err != nil {
		panic(err)
	}
	return fmt.Sprintf("1%014d", n.Int64())
}

func keyPairFromPrivate(priv []byte) *keys.KeyPair {
	return keys.NewKeyPairFromPrivateKey([32]byte(priv))
}
