package whatsapp

import (
	"context"
	"errors"
	"regexp"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"

	"github.com/gowa-dev/gowa/domain"
)

// restartWait is how long a pairing waits, after whatsmeow reports
// PairSuccess, for WhatsApp's 515 restart before it reports Paired anyway.
// The session is saved before PairSuccess; the 515 only confirms that
// WhatsApp took the device's signature, and WhatsApp sends it at once.
const restartWait = 10 * time.Second

// qrLogin is a pairing under way on a client: its QR channel and what has
// been seen of it.
type qrLogin struct {
	ctx     context.Context // ends the QR channel; cancelled by Close
	cancel  context.CancelFunc
	first   chan struct{} // closed at the first QR code: PairPhone may run
	done    chan struct{} // closed when the pairing has ended either way
	restart chan struct{} // closed when WhatsApp's 515 restart arrives

	firstOnce, restartOnce sync.Once
}

// StartQR connects the unpaired session and starts QR pairing. The QR codes
// and the outcome arrive as events: QRCode each time whatsmeow rotates the
// code, then Paired, PairingFailed or PairingExpired. Calling it again
// while the pairing runs does nothing; once it has ended, the client cannot
// pair again (ECONFLICT) and a new one must be opened. The connection and
// the pairing live on the session's context, not on ctx.
func (c *Client) StartQR(ctx context.Context) error {
	_, err := c.startQR()
	return err
}

func (c *Client) startQR() (*qrLogin, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if q := c.pairing(); q != nil {
		if q.ctx.Err() != nil {
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
	qctx, cancel := context.WithCancel(c.ctx)
	// whatsmeow requires the channel before Connect: it listens for the
	// pair-device answer that the connection brings.
	ch, err := c.wa.GetQRChannel(qctx)
	if err != nil {
		cancel()
		return nil, domain.Wrap(domain.ECONFLICT, err, "QR pairing cannot start on this session")
	}
	q := &qrLogin{
		ctx:     qctx,
		cancel:  cancel,
		first:   make(chan struct{}),
		done:    make(chan struct{}),
		restart: make(chan struct{}),
	}
	if !c.goTask(func() { c.forwardQR(q, ch) }) {
		cancel()
		return nil, domain.Errorf(domain.ECONFLICT, "the session is closed")
	}
	// One pairing per client, even a failed one: whatsmeow keeps a QR
	// channel's handler until an event ends it, and a stale channel would
	// disconnect a later pairing when its own codes run out.
	c.mu.Lock()
	c.qr = q
	c.mu.Unlock()
	// A pairing has no stored session to retry with: a failed first
	// connection is the caller's error, not a background retry.
	c.wa.InitialAutoReconnect = false
	if err := c.wa.ConnectContext(c.ctx); err != nil {
		cancel()
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

// forwardQR reports what the QR channel says, in its order, until the
// pairing ends or the client closes.
func (c *Client) forwardQR(q *qrLogin, ch <-chan whatsmeow.QRChannelItem) {
	defer close(q.done)
	defer q.cancel()
	for {
		var item whatsmeow.QRChannelItem
		var ok bool
		select {
		case item, ok = <-ch:
		case <-q.ctx.Done():
			return
		}
		if !ok {
			return // only when q.ctx ended
		}
		switch item.Event {
		case whatsmeow.QRChannelEventCode:
			c.emit(domain.QRCode{Code: item.Code, Timeout: item.Timeout})
			q.firstOnce.Do(func() { close(q.first) })
		case whatsmeow.QRChannelSuccess.Event:
			c.completePairing(q)
			return
		case whatsmeow.QRChannelTimeout.Event:
			// The codes ran out, or the connection closed before a scan;
			// whatsmeow has disconnected.
			c.emit(domain.PairingExpired{})
			return
		case whatsmeow.QRChannelScannedWithoutMultidevice.Event:
			// The channel stays open: the phone may scan again.
			c.log.Info("a QR code was scanned by a phone without multi-device support")
		case whatsmeow.QRChannelEventError:
			c.Disconnect()
			c.emit(domain.PairingFailed{Reason: pairErrorReason(item.Error)})
			return
		default:
			c.Disconnect()
			c.emit(domain.PairingFailed{Reason: channelFailure(item.Event)})
			return
		}
	}
}

// channelFailure words the QR channel's other final items.
func channelFailure(event string) string {
	switch event {
	case whatsmeow.QRChannelClientOutdated.Event:
		return "WhatsApp says this client version is outdated"
	case whatsmeow.QRChannelErrUnexpectedEvent.Event:
		return "WhatsApp answered as if the device were already linked"
	default:
		return event
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
	case <-q.ctx.Done():
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
// The phone shows displayName, in WhatsApp's "Browser (OS)" form. The
// outcome arrives as events, as with StartQR.
func (c *Client) PairCode(ctx context.Context, phone, displayName string) (string, error) {
	q, err := c.startQR()
	if err != nil {
		return "", err
	}
	select {
	case <-q.first:
	case <-q.done:
		return "", domain.Errorf(domain.ECONFLICT, "the pairing ended before WhatsApp was ready for a code")
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return "", domain.Wrap(domain.ETIMEOUT, ctx.Err(), "WhatsApp was not ready for a pairing code in time")
		}
		return "", ctx.Err()
	}
	code, err := c.wa.PairPhone(ctx, phone, true, whatsmeow.PairClientChrome, browserDisplay(displayName))
	if err != nil {
		return "", pairPhoneError(err)
	}
	return code, nil
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
