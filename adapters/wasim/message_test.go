package wasim_test

import (
	"context"
	"testing"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"google.golang.org/protobuf/proto"
)

// Sending twice to a contact (checklist #7 and #8): the contact's inbox
// holds both texts, the sender's phone a copy of each; the second send
// needs no new device list.
func TestSendTwiceToContact(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	createPhone(t, srv, bob, "Bob")
	c, jid := linkByQR(t, srv, alice, dbPath(t))
	nodes := countNodes(srv)

	to := types.NewJID(bob, types.DefaultUserServer)
	texts := []string{"Hello Bob", "Are you there?"}
	var ids []string
	var queries []int
	for _, text := range texts {
		resp, err := c.cli.SendMessage(ctx, to, &waE2E.Message{Conversation: proto.String(text)})
		if err != nil {
			t.Fatalf("send %q: %v", text, err)
		}
		if resp.Timestamp.IsZero() {
			t.Errorf("send %q: no timestamp", text)
		}
		ids = append(ids, resp.ID)
		queries = append(queries, nodes.get("iq usync usync"))
	}
	// The first send looks up Bob's LID and his LID's device list; the
	// second needs neither again.
	if queries[0] != 2 || queries[1] != queries[0] {
		t.Errorf("user-sync queries after each send %v, want [2 2]", queries)
	}

	inbox, err := srv.Messages(ctx, bob)
	if err != nil || len(inbox) != 2 {
		t.Fatalf("Bob's inbox %+v, %v", inbox, err)
	}
	sent, err := srv.Messages(ctx, alice)
	if err != nil || len(sent) != 2 {
		t.Fatalf("Alice's copies %+v, %v", sent, err)
	}
	for i, text := range texts {
		got := inbox[i]
		if got.ID != ids[i] || got.Text != text || got.From != jid || got.Chat != alice+"@s.whatsapp.net" || got.FromMe || got.Timestamp.IsZero() {
			t.Errorf("Bob's message %d: %+v", i, got)
		}
		own := sent[i]
		if own.ID != ids[i] || own.Text != text || own.From != jid || own.Chat != to.String() || !own.FromMe {
			t.Errorf("Alice's copy %d: %+v", i, own)
		}
	}

	// A number with no account has no LID: whatsmeow refuses to send to it
	// (checklist #27), and nothing reaches any phone.
	stranger := types.NewJID("628333333333", types.DefaultUserServer)
	if _, err := c.cli.SendMessage(ctx, stranger, &waE2E.Message{Conversation: proto.String("anyone?")}); err == nil {
		t.Fatal("send to a stranger succeeded")
	}
	if sent, _ := srv.Messages(ctx, alice); len(sent) != 2 {
		t.Fatalf("Alice's copies %+v", sent)
	}
}
