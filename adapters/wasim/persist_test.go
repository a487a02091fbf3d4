package wasim_test

import (
	"context"
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

// A new Server on the same folder restores the world: the phones, the
// linked device (which logs in again without pairing), the inboxes, and the
// phones' Signal sessions (a later send still decrypts).
func TestWorldPersistsAcrossRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	path := dbPath(t)
	to := types.NewJID(bob, types.DefaultUserServer)

	srv := newServer(t, dir)
	createPhone(t, srv, alice, "Alice")
	createPhone(t, srv, bob, "Bob")
	c, jid := linkByQR(t, srv, alice, path)
	if _, err := c.cli.SendMessage(ctx, to, &waE2E.Message{Conversation: proto.String("before")}); err != nil {
		t.Fatal(err)
	}
	c.close()
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}

	srv = newServer(t, dir)
	nodes := countNodes(srv)
	phone, err := srv.CreatePhone(ctx, alice, "")
	if err != nil || phone.PushName != "Alice" || phone.JID != alice+"@s.whatsapp.net" {
		t.Fatalf("restored phone %+v, %v", phone, err)
	}
	if devs, _ := srv.Devices(ctx, alice); len(devs) != 1 || devs[0].JID != jid || devs[0].Online {
		t.Fatalf("restored devices %+v", devs)
	}
	c = newClient(t, srv, path)
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitFor[*events.Connected](t, c)
	if n := nodes.get("iq encrypt list"); n != 0 {
		t.Errorf("%d prekey uploads after the restart", n)
	}
	if _, err := c.cli.SendMessage(ctx, to, &waE2E.Message{Conversation: proto.String("after")}); err != nil {
		t.Fatal(err)
	}
	inbox, _ := srv.Messages(ctx, bob)
	if len(inbox) != 2 || inbox[0].Text != "before" || inbox[1].Text != "after" {
		t.Fatalf("Bob's inbox after the restart %+v", inbox)
	}
	if sent, _ := srv.Messages(ctx, alice); len(sent) != 2 || !sent[1].FromMe {
		t.Fatalf("Alice's copies after the restart %+v", sent)
	}
}
