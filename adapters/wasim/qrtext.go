package wasim

import (
	"encoding/base64"
	"strings"
	"time"

	"go.mau.fi/whatsmeow"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/domain"
)

// qrURLPrefix starts the QR text of whatsmeow since mid-2026: a wa.me link
// whose fragment holds the fields, so a phone's camera app opens WhatsApp.
const qrURLPrefix = "https://wa.me/settings/linked_devices#"

// qrText is what a phone reads from a device's QR code.
type qrText struct {
	ref                string
	noiseKey, identity [32]byte
	advSecret          []byte
	clientType         whatsmeow.PairClientType // "" in the old form
}

// knownClientTypes are the fifth field's values whatsmeow defines.
var knownClientTypes = map[whatsmeow.PairClientType]bool{
	whatsmeow.PairClientUnknown: true, whatsmeow.PairClientChrome: true, whatsmeow.PairClientEdge: true,
	whatsmeow.PairClientFirefox: true, whatsmeow.PairClientIE: true, whatsmeow.PairClientOpera: true,
	whatsmeow.PairClientSafari: true, whatsmeow.PairClientElectron: true, whatsmeow.PairClientUWP: true,
	whatsmeow.PairClientOtherWebClient: true, whatsmeow.PairClientMacOS: true, whatsmeow.PairClientAndroid: true,
}

// parseQR reads both forms the phones accept: the old "ref,noise,identity,adv"
// and the current "https://wa.me/settings/linked_devices#ref,noise,identity,adv,type",
// whose fifth field is the kind of client (whatsmeow.PairClientType). Any
// other text is EINVALID.
func parseQR(text string) (qrText, error) {
	invalid := domain.Errorf(domain.EINVALID, "not a WhatsApp QR code")
	text = strings.TrimSpace(text)
	want := 4
	if rest, ok := strings.CutPrefix(text, qrURLPrefix); ok {
		text, want = rest, 5
	}
	parts := strings.Split(text, ",")
	if len(parts) != want || parts[0] == "" {
		return qrText{}, invalid
	}
	var keys [3][]byte
	for i, p := range parts[1:4] {
		b, err := base64.StdEncoding.DecodeString(p)
		if err != nil || len(b) != 32 {
			return qrText{}, invalid
		}
		keys[i] = b
	}
	q := qrText{ref: parts[0], noiseKey: [32]byte(keys[0]), identity: [32]byte(keys[1]), advSecret: keys[2]}
	if want == 5 {
		q.clientType = whatsmeow.PairClientType(parts[4])
		if !knownClientTypes[q.clientType] {
			return qrText{}, invalid
		}
	}
	return q, nil
}

// RefreshRegistration sends WhatsApp's companion_reg_refresh notification
// to the unlinked device whose QR code carries ref. WhatsApp has sent it
// during QR linking since mid-2026; whatsmeow (since September 2026) then
// makes a new ADV secret and shows its QR codes again with it, so a code
// read before the refresh no longer links. A ref no connection shows (any
// more) is ENOTFOUND.
func (s *Server) RefreshRegistration(ref string) error {
	s.mu.Lock()
	c := s.qrRefs[ref]
	s.mu.Unlock()
	if c == nil {
		return domain.Errorf(domain.ENOTFOUND, "no device shows that QR code")
	}
	return c.send(waBinary.Node{
		Tag:     "notification",
		Attrs:   waBinary.Attrs{"from": types.ServerJID, "type": "companion_reg_refresh", "id": c.nextID(), "t": time.Now().Unix()},
		Content: []waBinary.Node{{Tag: "companion_reg_refresh"}},
	})
}
