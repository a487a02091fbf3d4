package whatsapp

import (
	"context"
	"sync"
	"time"

	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/domain"
)

// How long an answer about a phone number is trusted, by default
// (Options.OnWhatsAppFor, OffWhatsAppFor). Numbers join WhatsApp more often
// than they leave, so a "not on WhatsApp" is asked again soon.
const (
	onWhatsAppFor  = 24 * time.Hour
	offWhatsAppFor = time.Minute
	maxRecipients  = 4096 // answers kept per session
)

// recipients remembers which phone numbers are on WhatsApp, and under which
// JID: WhatsApp registers some numbers under another form than the one
// dialled (Brazilian mobiles without their ninth digit, for one), and a
// message sent to a number that is not on WhatsApp is accepted by the
// server and never delivered.
type recipients struct {
	mu    sync.Mutex
	known map[string]recipient // by the phone number asked for
}

type recipient struct {
	jid   types.JID // zero when not on WhatsApp
	until time.Time
}

// resolve returns the JID to send to for to: a phone number's registered
// JID, asked of WhatsApp once and remembered, or to itself for anything
// else. A number that is not on WhatsApp is ENOTFOUND.
func (c *Client) resolve(ctx context.Context, to types.JID) (types.JID, error) {
	if to.Server != types.DefaultUserServer || to.Device != 0 {
		return to, nil
	}
	now := time.Now()
	c.recipients.mu.Lock()
	r, ok := c.recipients.known[to.User]
	c.recipients.mu.Unlock()
	if !ok || now.After(r.until) {
		answers, err := c.wa.IsOnWhatsApp(ctx, []string{"+" + to.User})
		if err != nil {
			return types.JID{}, sendError(err, "say whether the number is on WhatsApp")
		}
		r = recipient{until: now.Add(c.offFor)}
		for _, a := range answers {
			if a.IsIn {
				r = recipient{jid: a.JID.ToNonAD(), until: now.Add(c.onFor)}
				break
			}
		}
		c.recipients.mu.Lock()
		if len(c.recipients.known) >= maxRecipients {
			clear(c.recipients.known)
		}
		c.recipients.known[to.User] = r
		c.recipients.mu.Unlock()
	}
	if r.jid.IsEmpty() {
		return types.JID{}, domain.Errorf(domain.ENOTFOUND, "+%s is not on WhatsApp", to.User)
	}
	return r.jid, nil
}
