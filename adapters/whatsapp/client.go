package whatsapp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.mau.fi/whatsmeow"
	"go.mau.fi/whatsmeow/proto/waE2E"
	"go.mau.fi/whatsmeow/store/sqlstore"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/domain"
)

// Client is one whatsmeow session on its own database, or in the shared
// store. It implements ports.Client.
type Client struct {
	wa        *whatsmeow.Client
	container *sqlstore.Container // the session's own database; nil when shared
	log       *slog.Logger
	handlerID uint32

	// ctx is the session's lifetime, derived from the one Open got: every
	// background task of whatsmeow runs on it, and Close cancels it.
	ctx    context.Context
	cancel context.CancelFunc
	// unwatch stops the watch on Open's context (see newClient).
	unwatch func() bool
	tasks   sync.WaitGroup // the adapter's own goroutines

	// op serialises the lifecycle calls with the adapter's own reconnect
	// after a 515 restart and with Close.
	op sync.Mutex

	// emitMu makes events leave one at a time, in order, and none after
	// Close.
	emitMu sync.Mutex
	events func(domain.Event)
	closed bool

	recipients recipients

	firstLife, life time.Duration // of the first QR code and the later ones
	onFor, offFor   time.Duration // how long recipient answers are kept

	mu       sync.Mutex
	identity domain.Identity // JID "" while unpaired
	qr       *qrLogin        // the pairing started on this client, nil if none
}

func newClient(ctx context.Context, wa *whatsmeow.Client, container *sqlstore.Container, log *slog.Logger, events func(domain.Event)) *Client {
	// whatsmeow's frame reader reads its "closed" flag without a lock when
	// a read fails; a read failing because its context ended, while
	// Disconnect sets that flag, is a data race inside whatsmeow. So the
	// session's context ends only after the socket is closed: when Open's
	// context ends, disconnect first, then cancel.
	parent := ctx
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	c := &Client{
		wa:        wa,
		container: container,
		log:       log,
		ctx:       ctx,
		cancel:    cancel,
		events:    events,
	}
	c.recipients.known = make(map[string]recipient)
	c.unwatch = context.AfterFunc(parent, func() {
		wa.Disconnect()
		cancel()
	})
	if id := wa.Store.ID; id != nil {
		c.identity = domain.Identity{
			JID:      id.String(),
			Phone:    id.User,
			PushName: wa.Store.PushName,
			Platform: wa.Store.Platform,
		}
	}
	// whatsmeow runs event handlers and its reconnect loops on this context,
	// never on the context of the request that happened to connect.
	wa.BackgroundEventCtx = ctx
	wa.EnableAutoReconnect = true
	// After pairing, WhatsApp sends a 515 "restart"; whatsmeow would then
	// reconnect on this database by itself, racing the device service,
	// which closes this client and moves the database to its permanent
	// place. With this set, whatsmeow reports the 515 instead and the
	// adapter decides (see qrLogin).
	wa.DisableLoginAutoReconnect = true
	c.handlerID = wa.AddEventHandler(c.handle)
	return c
}

// Identity returns the linked account, and false while unpaired or after
// WhatsApp ended the session.
func (c *Client) Identity() (domain.Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.identity, c.identity.JID != ""
}

func (c *Client) linked() bool {
	_, ok := c.Identity()
	return ok
}

// Connect connects a paired session. whatsmeow logs in in the background;
// Connected or a failure event follows. A network error on this first
// attempt is not returned: whatsmeow reports Disconnected and keeps retrying
// with its backoff, as it does for every drop later on.
func (c *Client) Connect(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	if !c.linked() {
		return domain.Errorf(domain.ECONFLICT, "the session is not paired")
	}
	if c.isClosed() {
		return domain.Errorf(domain.ECONFLICT, "the session is closed")
	}
	c.wa.InitialAutoReconnect = true
	err := c.wa.ConnectContext(c.ctx)
	if errors.Is(err, whatsmeow.ErrAlreadyConnected) {
		return nil
	}
	if err != nil {
		return connectError(err)
	}
	return nil
}

// connectError maps a failed connection attempt to a domain error.
func connectError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return domain.Wrap(domain.ETIMEOUT, err, "WhatsApp did not answer in time")
	}
	return domain.Wrap(domain.EUNAVAILABLE, err, "could not connect to WhatsApp")
}

// Disconnect closes the connection without logging out. whatsmeow reports
// no event for it and does not reconnect.
func (c *Client) Disconnect() {
	c.wa.Disconnect()
}

// Logout unlinks the device on WhatsApp, disconnects and deletes the
// session from the database. When WhatsApp says it knows no such device
// the error is ECONFLICT; when WhatsApp cannot be reached, EUNAVAILABLE or
// ETIMEOUT, and the session is kept.
func (c *Client) Logout(ctx context.Context) error {
	c.op.Lock()
	defer c.op.Unlock()
	if !c.linked() {
		return domain.Errorf(domain.ECONFLICT, "the session is not paired")
	}
	err := c.wa.Logout(ctx)
	if err == nil {
		c.forget()
		return nil
	}
	var iqErr *whatsmeow.IQError
	switch {
	case errors.Is(err, whatsmeow.ErrNotLoggedIn):
		c.forget()
		return domain.Wrap(domain.ECONFLICT, err, "the session is not paired")
	case errors.As(err, &iqErr) && (iqErr.Code == 401 || iqErr.Code == 404):
		return domain.Wrap(domain.ECONFLICT, err, "WhatsApp knows no such linked device")
	case errors.Is(err, whatsmeow.ErrIQTimedOut), errors.Is(err, context.DeadlineExceeded):
		return domain.Wrap(domain.ETIMEOUT, err, "WhatsApp did not confirm the logout in time")
	case errors.Is(err, context.Canceled):
		return err
	case errors.As(err, &iqErr), isDisconnected(err):
		return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp could not be reached to log out")
	case !c.wa.IsConnected():
		// whatsmeow disconnects only once WhatsApp has confirmed the unlink,
		// so what failed is deleting the local copy, which the caller
		// deletes with the session folder anyway.
		c.log.Warn("unlinked on WhatsApp, but deleting the session from its database failed", "err", err)
		c.forget()
		return nil
	default:
		return domain.Wrap(domain.EINTERNAL, err, "log out")
	}
}

// isDisconnected tells whether err means the request never got an answer
// because the connection was down or dropped.
func isDisconnected(err error) bool {
	var de *whatsmeow.DisconnectedError
	return errors.Is(err, whatsmeow.ErrNotConnected) || errors.Is(err, whatsmeow.ErrIQDisconnected) || errors.As(err, &de)
}

// forget clears the cached identity once the session is gone.
func (c *Client) forget() {
	c.mu.Lock()
	c.identity = domain.Identity{}
	c.mu.Unlock()
}

// SendText sends a text message to a user JID ("628123456789@s.whatsapp.net")
// and returns WhatsApp's id and timestamp for it. A phone number is first
// looked up on WhatsApp (see resolve): one that is not on WhatsApp gets
// ENOTFOUND. A session that is not logged in gets ECONFLICT.
func (c *Client) SendText(ctx context.Context, to, text string) (domain.SentMessage, error) {
	jid, err := types.ParseJID(to)
	if err != nil || jid.User == "" || jid.Server == "" {
		return domain.SentMessage{}, domain.Errorf(domain.EINVALID, "%q is not a WhatsApp JID", to)
	}
	if !c.wa.IsLoggedIn() {
		return domain.SentMessage{}, domain.Errorf(domain.ECONFLICT, "the session is not connected")
	}
	if jid, err = c.resolve(ctx, jid); err != nil {
		return domain.SentMessage{}, err
	}
	resp, err := c.wa.SendMessage(ctx, jid, &waE2E.Message{Conversation: &text})
	if err != nil {
		return domain.SentMessage{}, sendError(err, "acknowledge the message")
	}
	return domain.SentMessage{ID: resp.ID, Timestamp: resp.Timestamp}, nil
}

// sendError maps a failed send, or a failed question before it, to a
// domain error; what says what WhatsApp did not do ("acknowledge the
// message").
func sendError(err error, what string) error {
	switch {
	case errors.Is(err, whatsmeow.ErrRecipientADJID), errors.Is(err, whatsmeow.ErrUnknownServer),
		errors.Is(err, whatsmeow.ErrBroadcastListUnsupported):
		return domain.Wrap(domain.EINVALID, err, "WhatsApp cannot send to that recipient")
	case errors.Is(err, whatsmeow.ErrNotLoggedIn), isDisconnected(err):
		return domain.Wrap(domain.ECONFLICT, err, "the session is not connected")
	case errors.Is(err, whatsmeow.ErrMessageTimedOut), errors.Is(err, whatsmeow.ErrIQTimedOut),
		errors.Is(err, context.DeadlineExceeded):
		return domain.Wrap(domain.ETIMEOUT, err, "WhatsApp did not "+what+" in time")
	case errors.Is(err, context.Canceled):
		return err
	default:
		return domain.Wrap(domain.EUNAVAILABLE, err, "WhatsApp did not "+what)
	}
}

// Close disconnects, stops every background task of the client and closes
// its database. The session stays in the database. Calling it again does
// nothing.
func (c *Client) Close() error {
	c.emitMu.Lock()
	if c.closed {
		c.emitMu.Unlock()
		return nil
	}
	c.closed = true
	c.emitMu.Unlock()

	// Disconnect before cancelling: whatsmeow's read loop runs on c.ctx,
	// and ending it first would race with the socket's own close.
	c.unwatch()
	c.op.Lock()
	c.wa.Disconnect()
	c.cancel()
	c.op.Unlock()
	c.wa.RemoveEventHandler(c.handlerID)
	c.tasks.Wait()
	if c.container == nil {
		return nil // the shared store outlives its clients
	}
	if err := c.container.Close(); err != nil {
		return fmt.Errorf("close session database: %w", err)
	}
	return nil
}

func (c *Client) isClosed() bool {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	return c.closed
}

// emit reports ev unless the client is closed. Callers are whatsmeow's
// goroutines and the adapter's; the callback never blocks.
func (c *Client) emit(ev domain.Event) {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	if !c.closed {
		c.events(ev)
	}
}

// goTask runs f on a goroutine that Close waits for, unless the client is
// closed already.
func (c *Client) goTask(f func()) bool {
	c.emitMu.Lock()
	defer c.emitMu.Unlock()
	if c.closed {
		return false
	}
	c.tasks.Add(1)
	go func() {
		defer c.tasks.Done()
		f()
	}()
	return true
}
