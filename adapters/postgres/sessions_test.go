package postgres_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"go.mau.fi/whatsmeow/proto/waAdv"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

// openSessions opens the session store of a replica on uri.
func openSessions(t *testing.T, uri, holder string) (*postgres.DB, *postgres.Sessions) {
	t.Helper()
	db := open(t, uri, holder)
	s, err := postgres.OpenSessions(context.Background(), db, nil)
	if err != nil {
		t.Fatal(err)
	}
	return db, s
}

// pairDevice does what the WhatsApp adapter and whatsmeow do for a pairing
// the phone links as jid: an unpaired device bound to the pairing, then
// saved under its JID. It returns the device.
func pairDevice(t testing.TB, s *postgres.Sessions, key, jid string) *store.Device {
	t.Helper()
	ctx := context.Background()
	dev := s.Container().NewDevice()
	h := sha256.Sum256(dev.NoiseKey.Priv[:])
	if err := s.BindPairing(ctx, key, h[:]); err != nil {
		t.Fatal(err)
	}
	if got, err := s.PairedJID(ctx, key); err != nil || got != "" {
		t.Fatalf("PairedJID of an unpaired pairing = %q, %v", got, err)
	}
	saveDevice(t, s.Container(), dev, jid)
	return dev
}

// saveDevice saves dev as jid, as whatsmeow does when pairing succeeds.
func saveDevice(t testing.TB, c *sqlstore.Container, dev *store.Device, jid string) {
	t.Helper()
	id, err := types.ParseJID(jid)
	if err != nil {
		t.Fatal(err)
	}
	dev.ID = &id
	dev.Account = &waAdv.ADVSignedDeviceIdentity{
		Details:             []byte{1},
		AccountSignature:    make([]byte, 64),
		AccountSignatureKey: make([]byte, 32),
		DeviceSignature:     make([]byte, 64),
	}
	if err := c.PutDevice(context.Background(), dev); err != nil {
		t.Fatal(err)
	}
}

func TestSessionStoreContract(t *testing.T) {
	t.Parallel()
	portstest.SessionStore(t, func(t *testing.T) (ports.SessionStore, func(*testing.T, string)) {
		_, s := openSessions(t, pgtest.DB(t), "a")
		return s, func(t *testing.T, key string) { pairDevice(t, s, key, portstest.SessionJID) }
	})
}

// A crash between whatsmeow saving the paired device and Promote: the next
// start finds the pairing, sees it paired, and promotes it.
func TestSessionsPairingCutOffAfterTheDeviceWasSaved(t *testing.T) {
	t.Parallel()
	uri := pgtest.DB(t)
	const jid = "628111:7@s.whatsapp.net"
	_, s := openSessions(t, uri, "a")
	key, err := s.NewPairing("phone")
	if err != nil {
		t.Fatal(err)
	}
	pairDevice(t, s, key, jid)

	_, again := openSessions(t, uri, "a") // the restart
	got, err := again.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	if want := []ports.StoredSession{{Key: key, DeviceID: "phone"}}; !slices.Equal(got, want) {
		t.Fatalf("Sessions = %+v, want %+v (the saved device is the pairing's, not a linked session yet)", got, want)
	}
	// Adopt reads one device: the same answers, one device at a time.
	if has, err := again.Has(jid); err != nil || has {
		t.Errorf("Has(%s) = %v, %v before Promote", jid, has, err)
	}
	if p, err := again.Pairings("phone"); err != nil || !slices.Equal(p, got) {
		t.Errorf("Pairings(phone) = %+v, %v; want %+v", p, err, got)
	}
	if p, err := again.Pairings("other"); err != nil || len(p) != 0 {
		t.Errorf("Pairings(other) = %+v, %v", p, err)
	}
	if paired, err := again.PairedJID(context.Background(), key); err != nil || paired != jid {
		t.Fatalf("PairedJID = %q, %v; want %s", paired, err, jid)
	}
	if err := again.Promote(key, "628111:8@s.whatsapp.net"); err == nil {
		t.Error("a pairing was promoted to a JID it did not link")
	}
	if err := again.Promote(key, jid); err != nil {
		t.Fatal(err)
	}
	got, _ = again.Sessions()
	if want := []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "phone"}}; !slices.Equal(got, want) {
		t.Fatalf("Sessions = %+v, want %+v", got, want)
	}
	if has, err := again.Has(jid); err != nil || !has {
		t.Errorf("Has(%s) = %v, %v after Promote", jid, has, err)
	}
	if p, err := again.Pairings("phone"); err != nil || len(p) != 0 {
		t.Errorf("Pairings(phone) = %+v, %v after Promote", p, err)
	}
}

// A second pairing that the phone links under the JID of an earlier
// session replaces it whole: whatsmeow's own upsert would keep the old
// keys, and the old session's rows would linger.
func TestSessionsRepairingAJIDReplacesTheOldDevice(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	const jid = "628111:9@s.whatsapp.net"
	db, s := openSessions(t, pgtest.DB(t), "a")
	first, _ := s.NewPairing("one")
	old := pairDevice(t, s, first, jid)
	if err := s.Promote(first, jid); err != nil {
		t.Fatal(err)
	}
	if _, err := old.PreKeys.GetOrGenPreKeys(ctx, 5); err != nil {
		t.Fatal(err)
	}
	second, _ := s.NewPairing("two")
	dev := pairDevice(t, s, second, jid)
	if err := s.Promote(second, jid); err != nil {
		t.Fatal(err)
	}
	got, err := s.Container().GetDevice(ctx, *dev.ID)
	if err != nil || got == nil || *got.NoiseKey.Priv != *dev.NoiseKey.Priv {
		t.Fatalf("the stored device is not the new pairing's (%v)", err)
	}
	var n int
	if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM whatsmeow_pre_keys WHERE jid = $1`, jid).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d prekeys of the old session left (%v)", n, err)
	}
	list, _ := s.Sessions()
	if want := []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "two"}}; !slices.Equal(list, want) {
		t.Fatalf("Sessions = %+v, want %+v", list, want)
	}
}

// Discarding a pairing the phone had linked deletes its device too; a
// device nobody recorded (written by hand, or by an older gowa) is listed
// as a linked session without a slot.
func TestSessionsDiscardAndUnrecordedDevices(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, s := openSessions(t, pgtest.DB(t), "a")
	key, _ := s.NewPairing("x")
	pairDevice(t, s, key, "628111:10@s.whatsapp.net")
	if err := s.Discard(key); err != nil {
		t.Fatal(err)
	}
	if dev, err := s.Container().GetAllDevices(ctx); err != nil || len(dev) != 0 {
		t.Fatalf("devices left after discard: %d, %v", len(dev), err)
	}
	saveDevice(t, s.Container(), s.Container().NewDevice(), "628111:11@s.whatsapp.net")
	got, _ := s.Sessions()
	if want := []ports.StoredSession{{JID: "628111:11@s.whatsapp.net", Key: "628111:11@s.whatsapp.net"}}; !slices.Equal(got, want) {
		t.Fatalf("Sessions = %+v, want %+v", got, want)
	}
	if _, err := s.PairedJID(ctx, "pairing:nope-0123456789abcdef"); err == nil {
		t.Error("PairedJID of an unknown pairing succeeded")
	}
}

// A pairing in progress on another live replica is not cut off: only its
// maker, or any replica once the maker's heartbeat lapsed, lists it.
func TestSessionsListOnlyPairingsCutOff(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	dbA, a := openSessions(t, uri, "a")
	_, b := openSessions(t, uri, "b")
	key, err := a.NewPairing("x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dbA.Pool.Exec(ctx, `INSERT INTO gowa_replicas (id, addr, expires_at) VALUES ('a', '', now() + interval '1 hour')`); err != nil {
		t.Fatal(err)
	}
	mine := []ports.StoredSession{{Key: key, DeviceID: "x"}}
	if got, err := a.Sessions(); err != nil || !slices.Equal(got, mine) {
		t.Fatalf("the maker lists %+v, %v; want %+v", got, err, mine)
	}
	if got, err := b.Sessions(); err != nil || len(got) != 0 {
		t.Fatalf("another replica lists %+v, %v while the maker is live", got, err)
	}
	if _, err := dbA.Pool.Exec(ctx, `UPDATE gowa_replicas SET expires_at = now() - interval '1 second'`); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Sessions(); err != nil || !slices.Equal(got, mine) {
		t.Fatalf("once the maker's heartbeat lapsed another replica lists %+v, %v; want %+v", got, err, mine)
	}
}

// Sessions on a store of 500 linked sessions: cluster-mode Adopt lists
// them once per device it takes.
func BenchmarkSessions500(b *testing.B) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.DB(b), postgres.Options{Holder: "a"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	s, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	for i := range 500 {
		key, err := s.NewPairing(fmt.Sprintf("d%d", i))
		if err != nil {
			b.Fatal(err)
		}
		jid := fmt.Sprintf("628%d:1@s.whatsapp.net", 1000+i)
		pairDevice(b, s, key, jid)
		if err := s.Promote(key, jid); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		got, err := s.Sessions()
		if err != nil || len(got) != 500 {
			b.Fatalf("%d sessions, %v", len(got), err)
		}
	}
}
