package wasim

import (
	"strings"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/domain"
)

// answerUsync answers a user-sync query for the protocols this simulator
// knows: devices (the device list whatsmeow fetches before encrypting),
// contact (IsOnWhatsApp) and lid. Other protocols are left out of each
// user, which whatsmeow reads as "nothing known".
func (c *conn) answerUsync(req *waBinary.Node, usync waBinary.Node) {
	want := map[string]bool{}
	query, list := usync.GetChildByTag("query"), usync.GetChildByTag("list")
	for _, q := range query.GetChildren() {
		want[q.Tag] = true
	}
	var users []waBinary.Node
	for _, u := range list.GetChildrenByTag("user") {
		if out, ok := c.usyncUser(u, want); ok {
			users = append(users, out)
		}
	}
	c.reply(req, waBinary.Node{
		Tag:   "usync",
		Attrs: waBinary.Attrs{"sid": usync.Attrs["sid"], "mode": usync.Attrs["mode"], "last": "true", "index": "0"},
		Content: []waBinary.Node{
			{Tag: "result"},
			{Tag: "list", Content: users},
		},
	})
}

// usyncUser answers for one listed user, named by a JID attribute or, in
// contact queries, by a "+digits@c.us" content.
func (c *conn) usyncUser(u waBinary.Node, want map[string]bool) (waBinary.Node, bool) {
	jid, ok := u.Attrs["jid"].(types.JID)
	var query []byte
	if contact, found := u.GetOptionalChildByTag("contact"); found {
		query = content(contact)
		digits := strings.TrimPrefix(strings.TrimSuffix(string(query), "@"+types.LegacyUserServer), "+")
		if phone, err := domain.NormalizePhone(digits); err == nil {
			jid, ok = types.NewJID(phone, types.DefaultUserServer), true
		}
	}
	if !ok || (jid.Server != types.DefaultUserServer && jid.Server != types.HiddenUserServer) {
		return waBinary.Node{}, false
	}
	jid = jid.ToNonAD() // the answer names the user as asked, PN or LID
	w := c.srv.world
	pn := w.toPN(jid)
	w.mu.Lock()
	a := w.accounts[pn.User]
	if pn.Server != types.DefaultUserServer {
		a = nil
	}
	var lid types.JID
	if a != nil {
		lid = types.NewJID(a.lidUser, types.HiddenUserServer)
	}
	w.mu.Unlock()

	out := waBinary.Node{Tag: "user", Attrs: waBinary.Attrs{"jid": jid}}
	var children []waBinary.Node
	if want["devices"] {
		var list []waBinary.Node
		if a != nil {
			// The phone, then every linked companion, the asker included:
			// whatsmeow skips its own device itself.
			list = append(list, waBinary.Node{Tag: "device", Attrs: waBinary.Attrs{"id": 0}})
			for _, d := range w.companions(pn.User) {
				list = append(list, waBinary.Node{Tag: "device", Attrs: waBinary.Attrs{"id": int(d.jid.Device)}})
			}
		}
		children = append(children, waBinary.Node{Tag: "devices", Content: []waBinary.Node{
			{Tag: "device-list", Content: list},
		}})
	}
	if want["contact"] {
		typ := "out"
		if a != nil {
			typ = "in"
		}
		children = append(children, waBinary.Node{Tag: "contact", Attrs: waBinary.Attrs{"type": typ}, Content: query})
	}
	if want["lid"] && a != nil {
		children = append(children, waBinary.Node{Tag: "lid", Attrs: waBinary.Attrs{"val": lid}})
	}
	out.Content = children
	return out, true
}
