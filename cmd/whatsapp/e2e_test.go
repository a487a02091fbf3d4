package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/base64"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types/events"
	_ "modernc.org/sqlite"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// These tests run the real gateway (whatsmeow adapter, SQLite files, HTTP)
// against the in-process simulated WhatsApp network, driven by the client
// generated from openapi.yaml, as a user's SDK would drive it.

const (
	alice = "628111111111"
	bob   = "628222222222"
)

func (tg *testGateway) createPhone(phone, name string) {
	tg.t.Helper()
	resp, err := tg.client.SandboxCreatePhoneWithResponse(context.Background(), api.SandboxCreatePhoneJSONRequestBody{Phone: phone, PushName: &name})
	if err != nil || resp.JSON200 == nil {
		tg.t.Fatalf("create phone %s: %v %s", phone, err, body(resp))
	}
}

func body(r interface{ Status() string }) string {
	if r == nil {
		return ""
	}
	return r.Status()
}

// loginQR requests a QR for id and checks that the PNG carries the text.
func (tg *testGateway) loginQR(id string) api.LoginQR {
	tg.t.Helper()
	resp, err := tg.client.LoginQRWithResponse(context.Background(), id)
	if err != nil || resp.JSON200 == nil {
		tg.t.Fatalf("login %s: %v %d %s", id, err, resp.StatusCode(), resp.Body)
	}
	return resp.JSON200.Data
}

// pairByQR links device id to phone by QR and waits until it is connected.
func (tg *testGateway) pairByQR(id, phone string) api.Device {
	tg.t.Helper()
	qr := tg.loginQR(id)
	scan, err := tg.client.SandboxScanWithResponse(context.Background(), phone, api.SandboxScanJSONRequestBody{Qr: qr.QrString})
	if err != nil || scan.JSON200 == nil {
		tg.t.Fatalf("scan: %v %d %s", err, scan.StatusCode(), scan.Body)
	}
	dev := tg.waitState(id, api.Connected)
	if dev.Jid == nil || *dev.Jid != scan.JSON200.Data.Jid {
		tg.t.Fatalf("device JID %v, phone linked %s", dev.Jid, scan.JSON200.Data.Jid)
	}
	return dev
}

func decodeQR(t *testing.T, dataURL string) string {
	t.Helper()
	b64, ok := strings.CutPrefix(dataURL, "data:image/png;base64,")
	if !ok {
		t.Fatalf("qr_code is not a PNG data URL: %.40q", dataURL)
	}
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	// gozxing's default hints miss about 2 % of valid codes (that other
	// decoders read); the pure-barcode mode, for an image that is nothing
	// but the code, reads them.
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		res, err = qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	}
	if err != nil {
		t.Fatalf("decode QR PNG: %v", err)
	}
	return res.GetText()
}

func TestQRLoginSendRestartLogout(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tg := startGateway(t, dir)
	tg.createPhone(alice, "Alice")
	tg.createPhone(bob, "Bob")

	qr := tg.loginQR("my-device")
	if got := decodeQR(t, qr.QrCode); got != qr.QrString {
		t.Fatalf("the PNG carries %q, qr_string is %q", got, qr.QrString)
	}
	// The current whatsmeow's form: a wa.me link with five fields (checked
	// by shape only: the text itself is a secret).
	if !strings.HasPrefix(qr.QrString, qrLinkPrefix) || strings.Count(qr.QrString, ",") != 4 {
		t.Errorf("qr_string is not a wa.me link with five fields (%d commas)", strings.Count(qr.QrString, ","))
	}
	// The first code lives 60 s; a loaded machine may take a few of them
	// between the QR event and the answer.
	if qr.QrDuration < 30 || qr.QrDuration > 60 {
		t.Errorf("qr_duration %d, want about 60", qr.QrDuration)
	}
	again := tg.loginQR("my-device")
	if again.QrString != qr.QrString {
		t.Error("a second login call during pairing returned another QR")
	}
	dev := tg.pairByQR("my-device", alice)
	jid := *dev.Jid
	if !strings.HasPrefix(jid, alice+":") || dev.Phone == nil || *dev.Phone != alice || !dev.Sandbox {
		t.Fatalf("device after pairing: %+v", dev)
	}
	checkSessionFiles(t, dir, jid)

	// Send to Bob: his inbox holds the text, Alice's phone a copy.
	send, err := tg.client.SendMessageWithResponse(context.Background(), &api.SendMessageParams{XDeviceID: ptr("my-device")},
		api.SendMessageJSONRequestBody{Phone: bob, Message: "Hello Bob"})
	if err != nil || send.JSON200 == nil {
		t.Fatalf("send: %v %s", err, send.Body)
	}
	msgs, err := tg.client.SandboxListMessagesWithResponse(context.Background(), bob)
	if err != nil || msgs.JSON200 == nil {
		t.Fatalf("messages: %v", err)
	}
	if !hasMessage(msgs.JSON200.Data, send.JSON200.Data.MessageID, "Hello Bob", false) {
		t.Fatalf("Bob's inbox lacks the message: %+v", msgs.JSON200.Data)
	}
	own, _ := tg.client.SandboxListMessagesWithResponse(context.Background(), alice)
	if own.JSON200 == nil || !hasMessage(own.JSON200.Data, send.JSON200.Data.MessageID, "Hello Bob", true) {
		t.Fatalf("Alice's phone lacks the sent copy: %s", own.Body)
	}
	// The header may be left out: one device is logged in.
	if code, env := tg.do("POST", "/send/message", `{"phone":"`+bob+`@s.whatsapp.net","message":"Again"}`); code != 200 {
		t.Fatalf("send without X-Device-Id: %d %s", code, env.raw)
	}
	// A number nobody uses on WhatsApp is a 404, not a message lost.
	if code, env := tg.do("POST", "/send/message", `{"phone":"+6299900001111","message":"anyone?"}`); code != 404 || !strings.Contains(env.Message, "not on WhatsApp") {
		t.Fatalf("send to a number not on WhatsApp: %d %s", code, env.raw)
	}

	// Restart: the device comes back without scanning.
	tg.stop()
	tg = startGateway(t, dir)
	dev = tg.waitState("my-device", api.Connected)
	if *dev.Jid != jid {
		t.Fatalf("restored as %s, was %s", *dev.Jid, jid)
	}
	conns, _ := tg.client.SandboxConnectionsWithResponse(context.Background())
	if conns.JSON200 == nil || conns.JSON200.Data.ByDevice[jid] != 1 {
		t.Fatalf("connections after restore: %s", conns.Body)
	}
	if code, env := tg.do("POST", "/send/message", `{"phone":"`+bob+`","message":"After restart"}`, "X-Device-Id", "my-device"); code != 200 {
		t.Fatalf("send after restart: %d %s", code, env.raw)
	}

	// A login on a logged-in device is a conflict.
	if code, _ := tg.do("GET", "/devices/my-device/login", ""); code != 409 {
		t.Errorf("login of a logged-in device: %d, want 409", code)
	}

	// Logout unlinks it on the phone and deletes the session; the slot stays.
	out, err := tg.client.LogoutDeviceWithResponse(context.Background(), "my-device")
	if err != nil || out.JSON200 == nil {
		t.Fatalf("logout: %v %s", err, out.Body)
	}
	if d := out.JSON200.Data; d.LoggedIn || d.State != api.LoggedOut || d.Reason == nil || *d.Reason != api.Logout {
		t.Errorf("after logout: state %s, reason %v, logged in %v; want logged_out, logout", d.State, d.Reason, d.LoggedIn)
	}
	linked, _ := tg.client.SandboxListDevicesWithResponse(context.Background(), alice)
	if linked.JSON200 == nil || len(linked.JSON200.Data) != 0 {
		t.Fatalf("the phone still lists devices: %s", linked.Body)
	}
	if _, err := os.Stat(filepath.Join(dir, jid)); !os.IsNotExist(err) {
		t.Fatalf("session folder still there after logout: %v", err)
	}
	if code, _ := tg.do("GET", "/devices/my-device", ""); code != 200 {
		t.Errorf("slot gone after logout: %d", code)
	}
	checkNoSecrets(t, tg.logs.String(), qr.QrString)
}

func hasMessage(msgs []api.SandboxMessage, id, text string, fromMe bool) bool {
	for _, m := range msgs {
		if m.ID == id && m.Text == text && m.FromMe == fromMe {
			return true
		}
	}
	return false
}

func checkSessionFiles(t *testing.T, root, jid string) {
	t.Helper()
	dir := filepath.Join(root, jid)
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatalf("session folder: %v", err)
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("session folder mode %v, want 0700", st.Mode().Perm())
	}
	f, err := os.Stat(filepath.Join(dir, "session.db"))
	if err != nil {
		t.Fatalf("session.db: %v", err)
	}
	if f.Mode().Perm() != 0o600 {
		t.Errorf("session.db mode %v, want 0600", f.Mode().Perm())
	}
}

// checkNoSecrets fails if any secret appears in the logs.
func checkNoSecrets(t *testing.T, logs string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(logs, s) {
			t.Errorf("a secret reached the logs: %.12q…", s)
		}
		// QR texts are ref,noise,identity,adv: no part may leak either.
		for _, part := range strings.Split(s, ",") {
			if len(part) >= 16 && strings.Contains(logs, part) {
				t.Errorf("part of a secret reached the logs: %.12q…", part)
			}
		}
	}
}

func TestPairingCodeAndRemovalFromPhone(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tg := startGateway(t, dir)
	tg.createPhone(alice, "Alice")

	code, err := tg.client.LoginCodeWithResponse(context.Background(), "by-code", &api.LoginCodeParams{},
		api.LoginCodeJSONRequestBody{Phone: ptr("+" + alice)})
	if err != nil || code.JSON200 == nil {
		t.Fatalf("login code: %v %s", err, code.Body)
	}
	c := code.JSON200.Data.Code
	if len(c) != 9 || c[4] != '-' || code.JSON200.Data.Duration <= 0 {
		t.Fatalf("pairing code %q duration %d", c, code.JSON200.Data.Duration)
	}
	// The same request while the code is valid returns the same code.
	if code2, _ := tg.client.LoginCodeWithResponse(context.Background(), "by-code", &api.LoginCodeParams{Phone: ptr(alice)}, api.LoginCodeJSONRequestBody{}); code2.JSON200 == nil || code2.JSON200.Data.Code != c {
		t.Fatalf("repeated code request: %s", code2.Body)
	}
	link, err := tg.client.SandboxLinkCodeWithResponse(context.Background(), alice, api.SandboxLinkCodeJSONRequestBody{Code: c})
	if err != nil || link.JSON200 == nil {
		t.Fatalf("link code: %v %s", err, link.Body)
	}
	dev := tg.waitState("by-code", api.Connected)
	jid := *dev.Jid

	// The phone removes the device: the gateway sees a remote logout.
	if rm, err := tg.client.SandboxRemoveDeviceWithResponse(context.Background(), alice, jid); err != nil || rm.StatusCode() != 200 {
		t.Fatalf("remove device: %v %s", err, rm.Body)
	}
	dev = tg.waitState("by-code", api.LoggedOut)
	if dev.LoggedIn || dev.LastError == nil || dev.Reason == nil || *dev.Reason != api.RemovedOnPhone {
		t.Fatalf("after removal: %+v", dev)
	}
	eventually(t, 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, jid))
		return os.IsNotExist(err)
	}, "session folder deleted after remote logout")
	checkNoSecrets(t, tg.logs.String(), c, strings.ReplaceAll(c, "-", ""))
}

func TestStreamReplacedDoesNotFight(t *testing.T) {
	t.Parallel()
	dir, jids := linkedCopy(t)
	tg := startGateway(t, dir)
	jid := jids["dev"]
	tg.waitState("dev", api.Connected)

	// Another client takes over the same session: a bare whatsmeow client on
	// a consistent copy of the live database.
	other := filepath.Join(t.TempDir(), "session.db")
	copySession(t, filepath.Join(dir, jid, "session.db"), other)
	container, err := sqlstore.New(context.Background(), "sqlite", "file:"+other+"?_pragma=foreign_keys(1)&_pragma=busy_timeout(5000)", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer container.Close()
	store, err := container.GetFirstDevice(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cli := whatsmeow.NewClient(store, nil)
	cli.SetPreLoginHTTPClient(tg.g.Sim.HTTPClient())
	cli.SetWebsocketHTTPClient(tg.g.Sim.HTTPClient())
	connected := make(chan struct{}, 1)
	cli.AddEventHandler(func(ev any) {
		if _, ok := ev.(*events.Connected); ok {
			select {
			case connected <- struct{}{}:
			default:
			}
		}
	})
	if err := cli.Connect(); err != nil {
		t.Fatal(err)
	}
	defer cli.Disconnect()
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Fatal("the second client did not connect")
	}

	dev := tg.waitState("dev", api.Offline)
	if dev.LastError == nil || !strings.Contains(*dev.LastError, "replaced") || dev.Reason == nil || *dev.Reason != api.StreamReplaced {
		t.Fatalf("reason %v, last_error %v after replacement", dev.Reason, dev.LastError)
	}
	conns, _ := tg.client.SandboxConnectionsWithResponse(context.Background())
	if conns.JSON200 == nil || conns.JSON200.Data.ByDevice[jid] != 1 {
		t.Fatalf("connections for the device: %s", conns.Body)
	}
}

// copySession copies a live SQLite database consistently.
func copySession(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+from+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`VACUUM INTO ?`, to); err != nil {
		t.Fatal(err)
	}
}

// qrLinkPrefix starts whatsmeow's QR text since 2026.
const qrLinkPrefix = "https://wa.me/settings/linked_devices#"

// The sandbox's phones still read the QR text of older whatsmeow releases
// (four fields, no link).
func TestSandboxScansOldQRForm(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir())
	tg.createPhone(alice, "Alice")
	qr := tg.loginQR("old-form")
	fields := strings.Split(strings.TrimPrefix(qr.QrString, qrLinkPrefix), ",")
	if len(fields) != 5 {
		t.Fatalf("qr_string has %d fields", len(fields))
	}
	old := strings.Join(fields[:4], ",")
	scan, err := tg.client.SandboxScanWithResponse(context.Background(), alice, api.SandboxScanJSONRequestBody{Qr: old})
	if err != nil || scan.JSON200 == nil {
		t.Fatalf("scan of the old form: %v %d %s", err, scan.StatusCode(), scan.Body)
	}
	if dev := tg.waitState("old-form", api.Connected); dev.Jid == nil || *dev.Jid != scan.JSON200.Data.Jid {
		t.Fatalf("device JID %v, phone linked %s", dev.Jid, scan.JSON200.Data.Jid)
	}
}

// When WhatsApp refreshes the registration during QR linking
// (companion_reg_refresh), the login answers the re-keyed code, and that
// code links.
func TestLoginFollowsARegistrationRefresh(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir())
	tg.createPhone(alice, "Alice")
	first := tg.loginQR("refreshed")
	ref, _, _ := strings.Cut(strings.TrimPrefix(first.QrString, qrLinkPrefix), ",")
	if err := tg.g.Sim.RefreshRegistration(ref); err != nil {
		t.Fatal(err)
	}
	var next api.LoginQR
	eventually(t, 20*time.Second, func() bool {
		next = tg.loginQR("refreshed")
		return next.QrString != first.QrString
	}, "the re-keyed QR code")
	if !strings.HasPrefix(next.QrString, qrLinkPrefix+ref+",") {
		t.Fatal("the re-keyed code shows another ref")
	}
	if got := decodeQR(t, next.QrCode); got != next.QrString {
		t.Error("the PNG does not carry the re-keyed code")
	}
	scan, err := tg.client.SandboxScanWithResponse(context.Background(), alice, api.SandboxScanJSONRequestBody{Qr: next.QrString})
	if err != nil || scan.JSON200 == nil {
		t.Fatalf("scan of the re-keyed code: %v %d %s", err, scan.StatusCode(), scan.Body)
	}
	tg.waitState("refreshed", api.Connected)
}

func TestConcurrentLoginsOpenOneConnection(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir())
	var wg sync.WaitGroup
	qrs := make([]string, 20)
	for i := range qrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := tg.client.LoginQRWithResponse(context.Background(), "busy")
			if err != nil || resp.JSON200 == nil {
				t.Errorf("login %d: %v %s", i, err, resp.Body)
				return
			}
			qrs[i] = resp.JSON200.Data.QrString
		}()
	}
	wg.Wait()
	for i, q := range qrs {
		if q != qrs[0] {
			t.Fatalf("login %d got another QR", i)
		}
	}
	conns, _ := tg.client.SandboxConnectionsWithResponse(context.Background())
	if conns.JSON200 == nil || conns.JSON200.Data.Open != 1 {
		t.Fatalf("open connections after 20 logins: %s", conns.Body)
	}
}

// TestQRCodeRotates shortens the first code's life so that it expires at
// once: the next login call answers the new code with its own life (the
// later codes' 20 s), on the same connection.
func TestQRCodeRotates(t *testing.T) {
	t.Parallel()
	tg := startTuned(t, t.TempDir(), gateway.Tuning{FirstQR: 100 * time.Millisecond})
	first := tg.loginQR("rotating")
	attempts := tg.connections().Attempts
	var next api.LoginQR
	eventually(t, 10*time.Second, func() bool {
		next = tg.loginQR("rotating")
		return next.QrString != first.QrString
	}, "a new QR code")
	if next.QrDuration > 20 || next.QrDuration < 5 {
		t.Errorf("qr_duration of the second code %d, want about 20", next.QrDuration)
	}
	if got := decodeQR(t, next.QrCode); got != next.QrString {
		t.Errorf("the new PNG carries %q, qr_string is %q", got, next.QrString)
	}
	if c := tg.connections(); c.Attempts != attempts || c.Open != 1 {
		t.Errorf("rotation opened connections: attempts %d → %d, open %d", attempts, c.Attempts, c.Open)
	}
	if st := tg.status("rotating"); st.State != api.Pairing {
		t.Errorf("state after rotation: %s", st.State)
	}
}

// connections asks the simulator how many connections it has.
func (tg *testGateway) connections() api.SandboxConnections {
	tg.t.Helper()
	resp, err := tg.client.SandboxConnectionsWithResponse(context.Background())
	if err != nil || resp.JSON200 == nil {
		tg.t.Fatalf("sandbox connections: %v", err)
	}
	return resp.JSON200.Data
}

func ptr[T any](v T) *T { return &v }
