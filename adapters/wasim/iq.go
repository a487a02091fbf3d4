package wasim

import (
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"
)

// handleIQ answers a client IQ, or hands an answer to a server IQ to the
// request waiting for it. Every IQ gets an answer, an empty result by
// default: whatsmeow waits 75 s for an unanswered one, and its Connected
// event waits for the prekey count and passive IQs.
func (c *conn) handleIQ(node *waBinary.Node) {
	typ, _ := node.Attrs["type"].(string)
	if typ == "result" || typ == "error" {
		c.deliverResponse(node)
		return
	}
	xmlns, _ := node.Attrs["xmlns"].(string)
	child, hasChild := firstChild(node)
	switch {
	case xmlns == "encrypt" && hasChild && child.Tag == "count":
		c.answerPreKeyCount(node)
	case xmlns == "encrypt" && typ == "set" && hasChild:
		c.storePreKeys(node)
	case xmlns == "encrypt" && hasChild && child.Tag == "key":
		c.answerBundles(node, child)
	case xmlns == "usync" && hasChild && child.Tag == "usync":
		c.answerUsync(node, child)
	case xmlns == "md" && hasChild && child.Tag == "remove-companion-device":
		c.logout(node, child)
	case xmlns == "md" && hasChild && child.Tag == "link_code_companion_reg":
		c.handleLinkCode(node, child)
	case xmlns == "passive" && hasChild && child.Tag == "active":
		c.reply(node)
		// Nothing is ever queued for an offline device here, so the
		// offline sync is complete at once; some applications wait for
		// this marker (OfflineSyncCompleted) before they call themselves
		// ready.
		if err := c.send(waBinary.Node{Tag: "ib", Content: []waBinary.Node{
			{Tag: "offline", Attrs: waBinary.Attrs{"count": 0}},
		}}); err != nil {
			c.log.Debug("wasim: send offline marker", "err", err)
		}
	default:
		// keepalive (w:p), passive and everything this simulator does not
		// model: an empty result is a good enough answer.
		c.reply(node)
	}
}

func firstChild(node *waBinary.Node) (waBinary.Node, bool) {
	children := node.GetChildren()
	if len(children) == 0 {
		return waBinary.Node{}, false
	}
	return children[0], true
}

// logout handles the client's own unlinking: the device is removed, so a
// later login with the same keys fails.
func (c *conn) logout(req *waBinary.Node, child waBinary.Node) {
	own := c.deviceJID()
	jid, _ := child.Attrs["jid"].(types.JID)
	if own == "" || jid.String() != own {
		c.replyError(req, 403, "forbidden")
		return
	}
	if _, err := c.srv.world.markRemoved(c.ctx, jid); err != nil {
		c.log.Error("wasim: mark device removed", "device", own, "err", err)
		c.replyError(req, 500, "internal-server-error")
		return
	}
	c.log.Info("wasim: device logged out", "device", own)
	c.setDevice("")
	c.reply(req)
}

// content returns a node's content as bytes: content that happens to be a
// dictionary token decodes as a string.
func content(n waBinary.Node) []byte {
	switch v := n.Content.(type) {
	case []byte:
		return v
	case string:
		return []byte(v)
	}
	return nil
}
