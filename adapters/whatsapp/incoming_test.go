package whatsapp

import (
	"testing"
	"time"

	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/types/events"
	"google.golang.org/protobuf/proto"
)

func TestIncomingKinds(t *testing.T) {
	for _, tc := range []struct {
		msg        *waE2E.Message
		kind, text string
		told       bool
	}{
		{&waE2E.Message{Conversation: proto.String("hi")}, "text", "hi", true},
		{&waE2E.Message{ExtendedTextMessage: &waE2E.ExtendedTextMessage{Text: proto.String("link")}}, "text", "link", true},
		{&waE2E.Message{ImageMessage: &waE2E.ImageMessage{Caption: proto.String("cap")}}, "image", "", true},
		{&waE2E.Message{AudioMessage: &waE2E.AudioMessage{PTT: proto.Bool(true)}}, "voice", "", true},
		{&waE2E.Message{StickerMessage: &waE2E.StickerMessage{}}, "sticker", "", true},
		{&waE2E.Message{ReactionMessage: &waE2E.ReactionMessage{}}, "reaction", "", true},
		{&waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_REVOKE.Enum()}}, "revoke", "", true},
		{&waE2E.Message{ProtocolMessage: &waE2E.ProtocolMessage{Type: waE2E.ProtocolMessage_APP_STATE_SYNC_KEY_SHARE.Enum()}}, "", "", false},
		{&waE2E.Message{}, "unknown", "", true},
	} {
		e := &events.Message{Info: types.MessageInfo{
			MessageSource: types.MessageSource{
				Chat:   types.NewJID("628222", types.DefaultUserServer),
				Sender: types.NewADJID("628222", 0, 3),
			},
			ID: "ID1", PushName: "Bob", Timestamp: time.Unix(1700000000, 0),
		}, Message: tc.msg}
		got, told := incoming(e)
		if told != tc.told || got.Message.Type != tc.kind || got.Message.Text != tc.text {
			t.Errorf("%v: got %+v told %v; want %q %q %v", tc.msg, got.Message, told, tc.kind, tc.text, tc.told)
			continue
		}
		if told && (got.Message.From != "628222@s.whatsapp.net" || got.Message.Chat != "628222@s.whatsapp.net" || got.Message.ID != "ID1" || got.Message.PushName != "Bob") {
			t.Errorf("fields %+v", got.Message)
		}
	}
}
