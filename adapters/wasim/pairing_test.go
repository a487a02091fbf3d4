package wasim_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/domain"
)

// QR pairing (checklist #1), then a reconnect from the stored session
// (#3) and a network drop (#17).
func TestQRPairingAndReconnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	nodes := countNodes(srv)
	path := dbPath(t)
	c := newClient(t, srv, path)
	qrs, first := startPairing(t, c)
	// whatsmeow's QR text is a wa.me link with five fields since 2026.
	if first.Timeout != 60*time.Second || !strings.HasPrefix(first.Code, "https://wa.me/settings/linked_devices#") ||
		strings.Count(first.Code, ",") != 4 {
		t.Fatalf("first QR item: timeout %v, %d fields", first.Timeout, strings.Count(first.Code, ",")+1)
	}
	waitFor[*events.QR](t, c)

	_, err := srv.Scan(ctx, "+628999999999", first.Code)
	wantCode(t, err, domain.ENOTFOUND)
	_, err = srv.Scan(ctx, alice, "not a QR code")
	wantCode(t, err, domain.EINVALID)

	jid, err := srv.Scan(ctx, "+"+alice, first.Code)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	ps := waitFor[*events.PairSuccess](t, c)
	if ps.ID.String() != jid || ps.ID.User != alice || ps.ID.Device == 0 || ps.LID.Server != types.HiddenUserServer ||
		ps.LID.Device != ps.ID.Device || ps.Platform != "android" {
		t.Fatalf("PairSuccess %+v, scan linked %s", ps, jid)
	}
	if item := nextQR(t, qrs); item != whatsmeow.QRChannelSuccess {
		t.Fatalf("QR channel after pairing: %+v", item)
	}
	waitFor[*events.Connected](t, c)
	waitFor[*events.OfflineSyncCompleted](t, c)
	if !c.cli.IsLoggedIn() || c.cli.Store.ID == nil || c.cli.Store.ID.String() != jid {
		t.Fatalf("after login: logged in %v, ID %v", c.cli.IsLoggedIn(), c.cli.Store.ID)
	}
	if n := srv.PreKeyCount(jid); n != 812 {
		t.Errorf("server holds %d prekeys, want 812", n)
	}
	_, err = srv.Scan(ctx, alice, first.Code)
	wantCode(t, err, domain.ECONFLICT) // a QR links one device, once

	devs, err := srv.Devices(ctx, alice)
	if err != nil || len(devs) != 1 || devs[0].JID != jid || !devs[0].Online || devs[0].LinkedAt.IsZero() {
		t.Fatalf("devices %+v, %v", devs, err)
	}
	conns, _ := srv.Connections(ctx)
	if conns.Open != 1 || conns.LoggedIn != 1 || conns.ByDevice[jid] != 1 {
		t.Fatalf("connections %+v", conns)
	}

	// A new client on the same database logs in without pairing or uploads.
	c.close()
	uploads := nodes.get("iq encrypt list")
	again := newClient(t, srv, path)
	if err := again.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitFor[*events.Connected](t, again)
	if again.cli.Store.ID.String() != jid {
		t.Fatalf("reconnected as %v, want %s", again.cli.Store.ID, jid)
	}
	if n := nodes.get("iq encrypt list"); n != uploads {
		t.Errorf("%d prekey uploads on reconnect", n-uploads)
	}

	// A dropped connection comes back by itself.
	if n := srv.DropConnections(jid); n != 1 {
		t.Fatalf("dropped %d connections", n)
	}
	waitFor[*events.Disconnected](t, again)
	waitFor[*events.Connected](t, again)
	eventually(t, "one connection for the device", func() bool {
		conns, _ := srv.Connections(ctx)
		return conns.Open == 1 && conns.ByDevice[jid] == 1
	})

	// A drop with a refusal after it: the first reconnect is refused, a
	// later one gets through.
	before, _ := srv.Connections(ctx)
	if n, err := srv.Disrupt(ctx, sandbox.NetworkFault{Drop: true, Refuse: time.Second}); err != nil || n != 1 {
		t.Fatalf("disrupt: %d, %v", n, err)
	}
	waitFor[*events.Disconnected](t, again)
	waitFor[*events.Connected](t, again)
	if after, _ := srv.Connections(ctx); after.Attempts < before.Attempts+2 || after.ByDevice[jid] != 1 {
		t.Fatalf("connections before the fault %+v, after %+v", before, after)
	}
}

// Pairing by code (checklist #2): the phone enters the code the device
// asked for; a wrong code fails and may be retried.
func TestPairingCode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	c := newClient(t, srv, dbPath(t))
	startPairing(t, c)

	_, err := srv.EnterCode(ctx, alice, "ABCD-1234")
	wantCode(t, err, domain.ECONFLICT) // nobody asked for a code yet

	code, err := c.cli.PairPhone(ctx, "+"+alice, true, whatsmeow.PairClientChrome, "Chrome (Linux)")
	if err != nil {
		t.Fatal(err)
	}
	if len(code) != 9 || code[4] != '-' {
		t.Fatalf("code %q", code)
	}
	_, err = srv.EnterCode(ctx, alice, "ABC")
	wantCode(t, err, domain.EINVALID)
	_, err = srv.EnterCode(ctx, alice, wrongCode(code))
	wantCode(t, err, domain.EINVALID)

	jid, err := srv.EnterCode(ctx, alice, strings.ToLower(code))
	if err != nil {
		t.Fatalf("enter code: %v", err)
	}
	ps := waitFor[*events.PairSuccess](t, c)
	if ps.ID.String() != jid {
		t.Fatalf("paired as %s, phone linked %s", ps.ID, jid)
	}
	waitFor[*events.Connected](t, c)
	if devs, _ := srv.Devices(ctx, alice); len(devs) != 1 || devs[0].JID != jid {
		t.Fatalf("devices %+v", devs)
	}
	_, err = srv.EnterCode(ctx, alice, code)
	wantCode(t, err, domain.ECONFLICT) // the request was used up
}

// wrongCode changes one character of a valid code.
func wrongCode(code string) string {
	b := []byte(code)
	if b[0] == 'A' {
		b[0] = 'B'
	} else {
		b[0] = 'A'
	}
	return string(b)
}

// The phones still read the QR text of older whatsmeow releases: the four
// comma-separated fields without the link or the client type.
func TestQRPairingOldForm(t *testing.T) {
	t.Parallel()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	c := newClient(t, srv, dbPath(t))
	_, first := startPairing(t, c)
	fields := strings.Split(strings.TrimPrefix(first.Code, "https://wa.me/settings/linked_devices#"), ",")
	if len(fields) != 5 {
		t.Fatalf("QR text with %d fields", len(fields))
	}
	_, err := srv.Scan(context.Background(), alice, strings.Join(fields, ","))
	wantCode(t, err, domain.EINVALID) // five fields need the link
	old := strings.Join(fields[:4], ",")
	jid, err := srv.Scan(context.Background(), alice, old)
	if err != nil {
		t.Fatalf("scan of the old form: %v", err)
	}
	if ps := waitFor[*events.PairSuccess](t, c); ps.ID.String() != jid {
		t.Fatalf("PairSuccess %+v, scan linked %s", ps, jid)
	}
	waitFor[*events.Connected](t, c)
}

// WhatsApp's companion_reg_refresh during QR linking (checklist: 2026
// protocol): whatsmeow makes a new ADV secret and shows the same ref again
// with it; the new code links, a code read before the refresh does not.
func TestRegistrationRefresh(t *testing.T) {
	t.Parallel()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	refresh := func(t *testing.T) (old, fresh string) {
		c := newClient(t, srv, dbPath(t))
		qrs, first := startPairing(t, c)
		fields := strings.Split(strings.TrimPrefix(first.Code, "https://wa.me/settings/linked_devices#"), ",")
		if err := srv.RefreshRegistration(fields[0]); err != nil {
			t.Fatalf("refresh: %v", err)
		}
		next := nextQR(t, qrs)
		again := strings.Split(strings.TrimPrefix(next.Code, "https://wa.me/settings/linked_devices#"), ",")
		if next.Event != whatsmeow.QRChannelEventCode || len(again) != 5 || again[0] != fields[0] ||
			again[1] != fields[1] || again[2] != fields[2] || again[3] == fields[3] {
			t.Fatalf("after the refresh the QR channel gave %q with fields changed %v", next.Event,
				[]bool{again[0] != fields[0], again[1] != fields[1], again[2] != fields[2], again[3] != fields[3]})
		}
		return first.Code, next.Code
	}
	t.Run("the new code links", func(t *testing.T) {
		_, fresh := refresh(t)
		if _, err := srv.Scan(context.Background(), alice, fresh); err != nil {
			t.Fatalf("scan of the refreshed code: %v", err)
		}
	})
	t.Run("the old code does not", func(t *testing.T) {
		old, _ := refresh(t)
		_, err := srv.Scan(context.Background(), alice, old)
		wantCode(t, err, domain.ECONFLICT)
		if !strings.Contains(err.Error(), "rejected") {
			t.Fatalf("scan of the old code: %v, want the device's rejection", err)
		}
	})
	if err := srv.RefreshRegistration("2@nobody"); domain.ErrorCode(err) != domain.ENOTFOUND {
		t.Fatalf("refresh of an unknown ref: %v", err)
	}
}

// A device that never confirms the link makes Scan fail with ETIMEOUT
// when the caller's deadline passes, and nothing is linked.
func TestScanTimesOut(t *testing.T) {
	t.Parallel()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	srv.SetHook(func(_ wasim.ConnInfo, node *waBinary.Node) bool {
		_, confirms := node.GetOptionalChildByTag("pair-device-sign")
		return node.Tag == "iq" && confirms // swallow the device's answer
	})
	c := newClient(t, srv, dbPath(t))
	_, first := startPairing(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	_, err := srv.Scan(ctx, alice, first.Code)
	wantCode(t, err, domain.ETIMEOUT)
	if devs, _ := srv.Devices(context.Background(), alice); len(devs) != 0 {
		t.Fatalf("devices after a failed link %+v", devs)
	}
}
