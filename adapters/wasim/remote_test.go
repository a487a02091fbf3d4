package wasim_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/domain"
)

// newAPIServer starts a simulator that also serves the sandbox API on its
// port, as `whatsapp simulator` does, and returns the Remote that reaches
// it over loopback.
func newAPIServer(t *testing.T, opts wasim.Options) (*wasim.Server, *wasim.Remote) {
	t.Helper()
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	opts.API = func(s *wasim.Server) http.Handler { return httpapi.NewHandler(httpapi.Config{Sandbox: s}) }
	srv, err := wasim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("close server: %v", err)
		}
	})
	remote, err := wasim.NewRemote("http://" + srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { remote.Close() })
	return srv, remote
}

// The remote client drives a simulator in another process exactly as the
// in-process one: a whatsmeow client links through its HTTP client, the
// phones answer through its API, and errors keep their code and message.
func TestRemote(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, remote := newAPIServer(t, wasim.Options{})

	root, err := remote.CertificateRoot(ctx)
	if err != nil || root != wasim.RootPublicKey() {
		t.Fatalf("certificate root %x, %v; want the process-wide root", root, err)
	}
	p, err := remote.CreatePhone(ctx, "+"+alice, "Alice")
	if err != nil || p.Phone != alice || p.PushName != "Alice" || p.JID != alice+"@s.whatsapp.net" {
		t.Fatalf("create phone: %+v, %v", p, err)
	}
	if _, err := remote.CreatePhone(ctx, bob, ""); err != nil {
		t.Fatal(err)
	}
	// Errors come back with the code and message the simulator gave.
	_, remoteErr := remote.Devices(ctx, "628999999999")
	_, localErr := srv.Devices(ctx, "628999999999")
	wantCode(t, remoteErr, domain.ENOTFOUND)
	if domain.ErrorMessage(remoteErr) != domain.ErrorMessage(localErr) {
		t.Errorf("remote error %q, in-process %q", domain.ErrorMessage(remoteErr), domain.ErrorMessage(localErr))
	}
	_, err = remote.Scan(ctx, alice, "not a QR")
	wantCode(t, err, domain.EINVALID)

	// Link a client whose connections go through the remote's HTTP client.
	c := newClientVia(t, remote.HTTPClient(), dbPath(t))
	_, first := startPairing(t, c)
	jid, err := remote.Scan(ctx, alice, first.Code)
	if err != nil {
		t.Fatalf("scan: %v", err)
	}
	waitFor[*events.Connected](t, c)
	devs, err := remote.Devices(ctx, alice)
	if err != nil || len(devs) != 1 || devs[0].JID != jid || !devs[0].Online || devs[0].LinkedAt.IsZero() {
		t.Fatalf("devices %+v, %v", devs, err)
	}

	// Both ways: the phone sends to the device, the device to Bob.
	sent, err := remote.SendFromPhone(ctx, bob, alice, "Hi Alice")
	if err != nil || sent.ID == "" || sent.Timestamp.IsZero() || len(sent.Delivered) != 1 || sent.Delivered[0] != jid {
		t.Fatalf("send from Bob's phone: %+v, %v", sent, err)
	}
	if msg := waitFor[*events.Message](t, c); msg.Message.GetConversation() != "Hi Alice" {
		t.Fatalf("the device got %q", msg.Message.GetConversation())
	}
	resp, err := c.cli.SendMessage(ctx, types.NewJID(bob, types.DefaultUserServer), &waE2E.Message{Conversation: proto.String("Hi Bob")})
	if err != nil {
		t.Fatal(err)
	}
	inbox, err := remote.Messages(ctx, bob)
	if err != nil || len(inbox) != 1 || inbox[0].ID != resp.ID || inbox[0].Text != "Hi Bob" || inbox[0].From != jid || inbox[0].FromMe {
		t.Fatalf("Bob's inbox %+v, %v", inbox, err)
	}

	conns, err := remote.Connections(ctx)
	if err != nil || conns.ByDevice[jid] != 1 || conns.MaxByDevice[jid] != 1 || conns.LoggedIn != 1 || conns.Attempts < 2 {
		t.Fatalf("connections %+v, %v", conns, err)
	}

	// A drop: the client sees it and comes back on its own.
	n, err := remote.Disrupt(ctx, sandbox.NetworkFault{Drop: true})
	if err != nil || n != 1 {
		t.Fatalf("drop: %d, %v", n, err)
	}
	waitFor[*events.Disconnected](t, c)
	waitFor[*events.Connected](t, c)
	_, err = remote.Disrupt(ctx, sandbox.NetworkFault{Refuse: -1})
	wantCode(t, err, domain.EINVALID)

	// The phone removes the device: the client is logged out.
	if err := remote.RemoveDevice(ctx, alice, jid); err != nil {
		t.Fatal(err)
	}
	waitFor[*events.LoggedOut](t, c)
	wantCode(t, remote.RemoveDevice(ctx, alice, jid), domain.ENOTFOUND)
}

// A request that is not a websocket upgrade reaches the API; one without
// an API (the in-process simulator) is refused as before.
func TestAPIBesideProtocol(t *testing.T) {
	t.Parallel()
	srv, _ := newAPIServer(t, wasim.Options{})
	resp, err := http.Get("http://" + srv.Addr() + "/sandbox/connections")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"max_by_device":{}`) {
		t.Fatalf("GET /sandbox/connections: %d %s", resp.StatusCode, body)
	}
	plain := newServer(t, "")
	resp, err = http.Get("http://" + plain.Addr() + "/sandbox/connections")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatal("a simulator without an API answered an API call")
	}
}

// A simulator with its own root keeps it in its folder: clients that
// trusted it trust it again after a restart.
func TestOwnRootPersists(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	open := func() [32]byte {
		srv, err := wasim.New(wasim.Options{Dir: dir, OwnRoot: true})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		root, err := srv.CertificateRoot(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return root
	}
	first := open()
	if first == wasim.RootPublicKey() {
		t.Fatal("OwnRoot signs with the process-wide root")
	}
	if again := open(); again != first {
		t.Fatal("the root changed across a restart")
	}
}

// A simulator that is not there is EUNAVAILABLE; a URL the remote cannot
// use is refused before any call.
func TestRemoteErrors(t *testing.T) {
	t.Parallel()
	remote, err := wasim.NewRemote("http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Connections(context.Background())
	wantCode(t, err, domain.EUNAVAILABLE)
	for _, bad := range []string{"", "127.0.0.1:3100", "https://127.0.0.1:3100", "http://", "http://u:p@127.0.0.1:3100", "http://127.0.0.1:3100/x", "http://127.0.0.1:3100?a=b"} {
		if _, err := wasim.NewRemote(bad); err == nil {
			t.Errorf("NewRemote(%q) accepted", bad)
		}
	}
}
