package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/types/events"

	"github.com/gowa-dev/gowa/domain"
)

// restartWait is how long a pairing waits, after whatsmeow reports
// PairSuccess, for WhatsApp's 515 restart before it reports Paired anyway.
// The session is saved before PairSuccess; the 515 only confirms that
// WhatsApp took the device's signature, and WhatsApp sends it at once.
const restartWait = 10 * time.Second

// qrLogin is a pairing under way on a client and what has been seen of
// it.
//
// The adapter follows the pairing through whatsmeow's events rather than
// its QR channel (GetQRChannel): the channel's code emitter sends on the
// channel while the event handler may close it, a data race in whatsmeow
// that can even panic with "send on closed channel" when a connection
// drops just as a code rotates.
type qrLogin struct {
	first   chan struct{} // closed at the first QR code: PairPhone may run
	done    chan struct{} // closed when the pairing has ended either way
	restart chan struct{} // closed when WhatsApp's 515 restart arrives
	// rekey carries WhatsApp's registration refreshes to the rotation: each
	// replaces the ADV secret in the codes not yet expired.
	rekey chan *events.RotateADVSecret

	firstOnce, restartOnce sync.Once

	// mu orders the codes before the outcome: no QRCode leaves after the
	// pairing has ended.
	mu      sync.Mutex
	ended   bool
	rotates bool      // the code rotation has started
	expires time.Time // when the last code of the series stops being valid
}

// isEnded tells whether the pairing has ended.
func (q *qrLogin) isEnded() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.ended
}

// showCode reports code unless the pairing has ended, and tells whether it
// did.
func (q *qrLogin) showCode(c *Client, code string, timeout time.Duration) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return false
	}
	c.emit(domain.QRCode{Code: code, Timeout: timeout})
	q.firstOnce.Do(func() { close(q.first) })
	return true
}

// finish ends the pairing and reports outcome (nil: nothing yet), unless
// it had ended already. It tells whether this call ended it.
func (q *qrLogin) finish(c *Client, outcome domain.Event) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.ended {
		return false
	}
	q.ended = true
	close(q.done)
	if outcome != nil {
		c.emit(outcome)
	}
	return true
}

// StartQR connects the unpaired session and starts QR pairing. The QR codes
// and the outcome arrive as events: QRCode each time the code rotates,
// then Paired, PairingFailed or PairingExpired. Calling it again while the
// pairing runs does nothing; once it has ended, the client cannot pair again
// (ECONFLICT) and a new one must be opened. The connection and the pairing
// live on the session's context, not on ctx.
func (c *Client) StartQR(ctx context.Context) error {
	_, err := c.startQR()
	return err
}

func (c *Client) startQR() (*qrLogin, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if q := c.pairing(); q != nil {
		if q.isEnded() {
			return nil, domain.Errorf(domain.ECONFLICT, "the pairing on this session has ended; open the session again to retry")
		}
		return q, nil
	}
	if c.linked() {
		return nil, domain.Errorf(domain.ECONFLICT, "the session is already paired")
	}
	if c.isClosed() {
		return nil, domain.Errorf(domain.ECONFLICT, "the session is closed")
	}
	q := &qrLogin{
		first:   make(chan struct{}),
		done:    make(chan struct{}),
		restart: make(chan struct{}),
		rekey:   make(chan *events.RotateADVSecret, 4),
	}
	// One pairing per client, even a failed one: a client whose pairing
	// ended is closed and a new one opened.
	c.mu.Lock()
	c.qr = q
	c.mu.Unlock()
	// A pairing has no stored session to retry with: a failed first
	// connection is the caller's error, not a background retry.
	c.wa.InitialAutoReconnect = false
	if err := c.wa.ConnectContext(c.ctx); err != nil {
		q.finish(c, nil)
		return nil, connectError(err)
	}
	return q, nil
}

// pairing returns the pairing started on this client, nil if none.
func (c *Client) pairing() *qrLogin {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.qr
}

// Default code lifetimes (Options), as WhatsApp's web client shows them:
// the first code of a series for a minute, each later one for 20 seconds.
const (
	firstCodeLife = 60 * time.Second
	codeLife      = 20 * time.Second
)

// handlePairing takes the whatsmeow events that concern a pairing under
// way, and tells whether it did. It runs on whatsmeow's event goroutine, so
// it never blocks and disconnects on a task.
func (c *Client) handlePairing(evt any) bool {
	q := c.pairing()
	if q == nil || q.isEnded() {
		return false
	}
	failed := func(reason string) {
		if q.finish(c, domain.PairingFailed{Reason: reason}) {
			c.goTask(c.wa.Disconnect)
		}
	}
	switch e := evt.(type) {
	case *events.QR:
		q.mu.Lock()
		start := !q.rotates && !q.ended
		q.rotates = true
		if start && len(e.Codes) > 0 {
			q.expires = time.Now().Add(c.firstLife + time.Duration(len(e.Codes)-1)*c.life)
		}
		q.mu.Unlock()
		if start {
			codes := slices.Clone(e.Codes)
			c.goTask(func() { c.rotateQR(q, codes) })
		}
	case *events.RotateADVSecret:
		// WhatsApp's companion_reg_refresh: the codes shown so far carry a
		// secret it has retired, and no phone could link with them.
		select {
		case q.rekey <- e:
		default:
			c.log.Warn("dropped a QR secret rotation: too many at once")
		}
	case *events.PairSuccess:
		// whatsmeow has saved the session by now.
		c.mu.Lock()
		c.identity = domain.Identity{JID: e.ID.String(), Phone: e.ID.User, Platform: e.Platform}
		c.mu.Unlock()
		if q.finish(c, nil) {
			c.goTask(func() { c.completePairing(q) })
		}
	case *events.PairError:
		failed(pairErrorReason(e.Error))
	case *events.Disconnected:
		// The pairing connection dropped before a scan.
		q.finish(c, domain.PairingExpired{})
	case *events.ClientOutdated:
		failed("WhatsApp says this client version is outdated")
	case *events.Connected, *events.ConnectFailure, *events.LoggedOut, *events.TemporaryBan:
		failed(fmt.Sprintf("WhatsApp answered the pairing with %T", evt))
	case *events.QRScannedWithoutMultidevice:
		// The phone may scan again.
		c.log.Info("a QR code was scanned by a phone without multi-device support")
	default:
		return false
	}
	return true
}

// rotateQR shows the codes WhatsApp gave, one after the other, each for its
// lifetime, until the pairing ends; when they run out unscanned it
// disconnects and reports PairingExpired. A registration refresh re-keys
// the current and later codes, and the current one is shown again for the
// rest of its life.
func (c *Client) rotateQR(q *qrLogin, codes []string) {
	for i := range codes {
		life := c.life
		if i == 0 {
			life = c.firstLife
		}
		if !q.showCode(c, codes[i], life) {
			return
		}
		expires := time.Now().Add(life)
		timer := time.NewTimer(life)
	wait:
		for {
			select {
			case <-timer.C:
				break wait
			case rot := <-q.rekey:
				for j := i; j < len(codes); j++ {
					codes[j] = strings.Replace(codes[j], rot.OldSecret, rot.NewSecret, 1)
				}
				if !q.showCode(c, codes[i], time.Until(expires)) {
					timer.Stop()
					return
				}
			case <-q.done:
				timer.Stop()
				return
			case <-c.ctx.Done():
				timer.Stop()
				return
			}
		}
	}
	if q.finish(c, domain.PairingExpired{}) {
		c.wa.Disconnect()
	}
}

func pairErrorReason(err error) string {
	switch {
	case err == nil:
		return "unknown pairing error"
	case errors.Is(err, whatsmeow.ErrPairInvalidDeviceIdentityHMAC),
		errors.Is(err, whatsmeow.ErrPairInvalidDeviceSignature):
		return "the phone's pairing answer did not verify"
	default:
		return err.Error()
	}
}

// completePairing reports Paired once the paired session is saved and
// WhatsApp has asked for the restart (515) that follows every pairing.
//
// whatsmeow saves the session before it reports PairSuccess. With
// DisableLoginAutoReconnect set, the 515 only produces an event and nothing
// reconnects on this database (the pairing also marked the disconnect as
// expected, so no automatic reconnect follows either). The device service
// therefore gets a quiet client: it closes it, moves the database, and
// connects the session from its new place. Waiting for the 515 means the
// client is not closed while WhatsApp still processes the device's
// signature; if it never comes, the pairing counts as done after
// restartWait, since the session is complete on disk either way.
func (c *Client) completePairing(q *qrLogin) {
	timer := time.NewTimer(restartWait)
	defer timer.Stop()
	select {
	case <-q.restart:
	case <-timer.C:
		c.log.Warn("WhatsApp sent no restart after pairing; treating the pairing as complete")
	case <-c.ctx.Done():
		return
	}
	id, ok := c.Identity()
	if !ok {
		c.emit(domain.PairingFailed{Reason: "pairing succeeded but the session has no JID"})
		return
	}
	c.emit(domain.Paired{Identity: id})
}

// onRestart handles WhatsApp's 515 restart, which whatsmeow reports instead
// of acting on it (DisableLoginAutoReconnect). During a pairing it marks
// the pairing complete. On a logged-in session it does what whatsmeow would
// have done: reconnect, on a task that Close waits for.
func (c *Client) onRestart() {
	if q := c.pairing(); q != nil {
		q.restartOnce.Do(func() { close(q.restart) })
		return
	}
	c.goTask(func() {
		c.op.Lock()
		defer c.op.Unlock()
		if c.ctx.Err() != nil {
			return
		}
		c.wa.Disconnect()
		if err := c.wa.ConnectContext(c.ctx); err != nil {
			c.log.Warn("reconnecting after WhatsApp's restart request", "err", err)
			c.emit(domain.Disconnected{})
		}
	})
}

// PairCode asks WhatsApp for a pairing code for phone (digits, with country
// code), to be entered on that phone. whatsmeow allows the request only
// once the connection has produced its first QR code, so PairCode starts
// QR pairing when none runs and waits for that code, as long as ctx allows.
// The phone shows displayName, in WhatsApp's "Browser (OS)" form. The code
// can be entered as long as the pairing connection stays open: until its
// QR series runs out, which is when it expires. The outcome arrives as
// events, as with StartQR.
func (c *Client) PairCode(ctx context.Context, phone, displayName string) (string, time.Time, error) {
	q, err := c.startQR()
	if err != nil {
		return "", time.Time{}, err
	}
	select {
	case <-q.first:
	case <-q.done:
		return "", time.Time{}, domain.Errorf(domain.ECONFLICT, "the pairing ended before WhatsApp was ready for a code")
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", time.Time{}, domain.Wrap(domain.ETIMEOUT, ctx.Err(), "WhatsApp was not ready for a pairing code in time")
		}
		return "", time.Time{}, ctx.Err()
	}
	code, err := c.wa.PairPhone(ctx, phone, true, whatsmeow.PairClientChrome, browserDisplay(displayName))
	if err != nil {
		return "", time.Time{}, pairPhoneError(err)
	}
	q.mu.Lock()
	expires := q.expires
	q.mu.Unlock()
	return code, expires, nil
}

var browserForm = regexp.MustCompile(`^\S.* \(.+\)$`)

// browserDisplay returns name in the "Browser (OS)" form WhatsApp requires
// of pairing-code clients: as it is if it has that form, else as the OS of
// a Chrome client.
func browserDisplay(name string) string {
	switch {
	case name == "":
		return "Chrome (Linux)"
	case browserForm.MatchString(name):
		return name
	default:
		return "Chrome (" + name + ")"
	}
}

func pairPhoneError(err error) error {
	var iqErr *whatsmeow.IQError
	switch {
	case errors.Is(err, whatsmeow.ErrPhoneNumberTooShort), errors.Is(err, whatsmeow.ErrPhoneNumberIsNotInternational):
		return domain.Wrap(domain.EINVALID, err, "the phone number must be international, with country code")
	case errors.As(err, &iqErr) && iqErr.Code == 400:
		return domain.Wrap(domain.EINVALID, err, "WhatsApp rejected the pairing code request")
	case errors.As(err, &iqErr) && iqErr.Code == 429:
		return domain.Wrap(domain.ECONFLICT, err, "WhatsApp refuses more pairing codes for now; try again later")
	case errors.Is(err, whatsmeow.ErrIQTimedOut), errors.Is(err, context.DeadlineExceeded):
		return domain.Wrap(domain.ETIMEOUT, err, "WhatsApp did not give a pairing code in time")
	case errors.Is(err, context.Canceled):
		return err
	default:
		return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp did not give a pairing code")
	}
}
