package wasim

import (
	"bytes"
	"context"
	"crypto/cipher"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/proto/waWa6"
	"go.mau.fi/whatsmeow/socket"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
	"google.golang.org/protobuf/proto"
)

// Timeouts the real server also roughly has: how long a client may take
// per handshake frame, and to answer an IQ the server sent.
const (
	handshakeTimeout = 10 * time.Second
	requestTimeout   = 10 * time.Second
	writeTimeout     = 10 * time.Second
	// closeDelay lets the client handle a failure or stream error before
	// it sees the close: whatsmeow handles frames and the socket's end on
	// different goroutines, and only a handled error makes the close quiet.
	closeDelay = 200 * time.Millisecond
)

// conn is one websocket connection from a client. Its run goroutine reads
// and handles every node in order; writes may come from any goroutine.
type conn struct {
	srv    *Server
	id     uint64
	ws     *websocket.Conn
	log    *slog.Logger
	ctx    context.Context // ends when the connection ends
	cancel context.CancelFunc

	// read side, owned by run
	buf        []byte
	gotHeader  bool
	readCipher cipher.AEAD
	readCount  uint32

	writeMu     sync.Mutex // frames must be sealed and sent in counter order
	writeCipher cipher.AEAD
	writeCount  uint32

	noiseKey [32]byte // the client's static Noise key, from the handshake
	payload  *waWa6.ClientPayload
	linking  bool // a phone is linking this device; guarded by srv.mu

	mu      sync.Mutex
	device  string // the JID this connection is logged in as; "" if none
	closing bool   // the server is closing this connection
	waiters map[string]chan *waBinary.Node
	nextReq int
}

// ConnInfo describes the connection a hooked node arrived on, and lets the
// hook answer on it.
type ConnInfo struct {
	ID     uint64 // unique per server
	Device string // the JID the connection is logged in as, "" before login
	c      *conn
}

// Send sends node to the client on this connection.
func (ci ConnInfo) Send(node waBinary.Node) error { return ci.c.send(node) }

// Close closes the connection without a goodbye.
func (ci ConnInfo) Close() { ci.c.closeNow() }

// CloseSoon closes the connection shortly, after the client has had time to
// handle what was sent last (a failure or a stream error).
func (ci ConnInfo) CloseSoon() { ci.c.closeSoon() }

func (c *conn) deviceJID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.device
}

func (c *conn) setDevice(jid string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.device = jid
}

// markClosing stops counting the connection as open or logged in.
func (c *conn) markClosing() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closing = true
	c.device = ""
}

func (c *conn) isClosing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing
}

// run does the handshake, then handles nodes until the socket ends.
func (c *conn) run() {
	if err := c.handshake(); err != nil {
		c.log.Debug("wasim: handshake", "err", err)
		return
	}
	c.start()
	for {
		node, err := c.readNode()
		if err != nil {
			if c.ctx.Err() == nil && websocket.CloseStatus(err) == -1 && !errors.Is(err, context.Canceled) {
				c.log.Debug("wasim: connection ended", "err", err)
			}
			return
		}
		c.handle(node)
	}
}

// readFrame returns the next frame's payload. Frames may span or share
// websocket messages; the very first message starts with the connection
// header.
func (c *conn) readFrame(ctx context.Context) ([]byte, error) {
	for {
		if len(c.buf) >= socket.FrameLengthSize {
			n := int(c.buf[0])<<16 | int(c.buf[1])<<8 | int(c.buf[2])
			if len(c.buf) >= socket.FrameLengthSize+n {
				frame := bytes.Clone(c.buf[socket.FrameLengthSize : socket.FrameLengthSize+n])
				c.buf = c.buf[socket.FrameLengthSize+n:]
				return frame, nil
			}
		}
		typ, data, err := c.ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ != websocket.MessageBinary {
			continue
		}
		if !c.gotHeader {
			if !bytes.HasPrefix(data, socket.WAConnHeader) {
				return nil, errors.New("missing connection header")
			}
			data = data[len(socket.WAConnHeader):]
			c.gotHeader = true
		}
		c.buf = append(c.buf, data...)
	}
}

// writeFrame sends one whole frame per websocket message: whatsmeow cannot
// reassemble a frame split across messages.
func (c *conn) writeFrame(data []byte) error {
	if len(data) >= socket.FrameMaxSize {
		return fmt.Errorf("frame of %d bytes is too large", len(data))
	}
	frame := make([]byte, socket.FrameLengthSize+len(data))
	frame[0], frame[1], frame[2] = byte(len(data)>>16), byte(len(data)>>8), byte(len(data))
	copy(frame[socket.FrameLengthSize:], data)
	ctx, cancel := context.WithTimeout(c.ctx, writeTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageBinary, frame)
}

// handshake runs the responder side of the Noise XX handshake and reads
// the client's payload.
func (c *conn) handshake() error {
	ctx, cancel := context.WithTimeout(c.ctx, handshakeTimeout)
	defer cancel()
	frame, err := c.readFrame(ctx)
	if err != nil {
		return handshakeErr("read hello", err)
	}
	var hello waWa6.HandshakeMessage
	if err := proto.Unmarshal(frame, &hello); err != nil {
		return handshakeErr("parse hello", err)
	}
	clientEph := hello.GetClientHello().GetEphemeral()
	if len(clientEph) != 32 {
		return handshakeErr("client ephemeral key", nil)
	}
	n, err := newNoise(socket.WAConnHeader)
	if err != nil {
		return handshakeErr("init", err)
	}
	n.mixHash(clientEph)
	eph := keys.NewKeyPair()
	n.mixHash(eph.Pub[:])
	if err := n.mixKey(eph.Priv, clientEph); err != nil {
		return handshakeErr("ee", err)
	}
	staticCT := n.encrypt(c.srv.static.Pub[:])
	if err := n.mixKey(c.srv.static.Priv, clientEph); err != nil {
		return handshakeErr("se", err)
	}
	cert, err := c.srv.certificate(c.srv.now())
	if err != nil {
		return handshakeErr("certificate", err)
	}
	certCT := n.encrypt(cert)
	serverHello, err := proto.Marshal(&waWa6.HandshakeMessage{ServerHello: &waWa6.HandshakeMessage_ServerHello{
		Ephemeral: eph.Pub[:], Static: staticCT, Payload: certCT,
	}})
	if err != nil {
		return handshakeErr("marshal server hello", err)
	}
	if err := c.writeFrame(serverHello); err != nil {
		return handshakeErr("write server hello", err)
	}
	if frame, err = c.readFrame(ctx); err != nil {
		return handshakeErr("read finish", err)
	}
	var finish waWa6.HandshakeMessage
	if err := proto.Unmarshal(frame, &finish); err != nil {
		return handshakeErr("parse finish", err)
	}
	clientStatic, err := n.decrypt(finish.GetClientFinish().GetStatic())
	if err != nil || len(clientStatic) != 32 {
		return handshakeErr("client static key", err)
	}
	if err := n.mixKey(eph.Priv, clientStatic); err != nil {
		return handshakeErr("es", err)
	}
	rawPayload, err := n.decrypt(finish.GetClientFinish().GetPayload())
	if err != nil {
		return handshakeErr("client payload", err)
	}
	var payload waWa6.ClientPayload
	if err := proto.Unmarshal(rawPayload, &payload); err != nil {
		return handshakeErr("parse client payload", err)
	}
	if c.readCipher, c.writeCipher, err = n.split(); err != nil {
		return handshakeErr("split", err)
	}
	c.noiseKey = [32]byte(clientStatic)
	c.payload = &payload
	return nil
}

func (c *conn) readNode() (*waBinary.Node, error) {
	frame, err := c.readFrame(c.ctx)
	if err != nil {
		return nil, err
	}
	plain, err := c.readCipher.Open(nil, nonce(c.readCount), frame, nil)
	c.readCount++
	if err != nil {
		return nil, fmt.Errorf("decrypt frame: %w", err)
	}
	data, err := waBinary.Unpack(plain)
	if err != nil {
		return nil, err
	}
	return waBinary.Unmarshal(data)
}

// send encrypts and sends one node.
func (c *conn) send(node waBinary.Node) error {
	data, err := waBinary.Marshal(node)
	if err != nil {
		return err
	}
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	sealed := c.writeCipher.Seal(nil, nonce(c.writeCount), data, nil)
	c.writeCount++
	return c.writeFrame(sealed)
}

// closeNow closes the socket at once, as a network drop would.
func (c *conn) closeNow() {
	c.markClosing()
	c.cancel()
	c.ws.CloseNow()
}

// closeSoon closes the socket after closeDelay, with a close handshake so
// that everything sent before arrives first.
func (c *conn) closeSoon() {
	c.markClosing()
	ok := c.srv.spawn(func() {
		t := time.NewTimer(closeDelay)
		defer t.Stop()
		select {
		case <-t.C:
			c.ws.Close(websocket.StatusNormalClosure, "")
		case <-c.ctx.Done():
		}
		c.closeNow()
	})
	if !ok {
		c.closeNow()
	}
}

// handle dispatches one node from the client, after the test hook.
func (c *conn) handle(node *waBinary.Node) {
	if hook := c.srv.currentHook(); hook != nil && hook(ConnInfo{ID: c.id, Device: c.deviceJID(), c: c}, node) {
		return
	}
	switch node.Tag {
	case "iq":
		c.handleIQ(node)
	case "message":
		c.handleMessage(node)
	case "receipt":
		c.handleReceipt(node)
	}
	// Acks and presences need no answer from this simulator; receipts only
	// wake a phone's send that waits for them (send.go).
}

// request sends an IQ to the client and waits for its answer.
func (c *conn) request(ctx context.Context, node waBinary.Node) (*waBinary.Node, error) {
	id := c.nextID()
	ch := make(chan *waBinary.Node, 1)
	c.mu.Lock()
	c.waiters[id] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.waiters, id)
		c.mu.Unlock()
	}()
	node.Attrs["id"] = id
	if err := c.send(node); err != nil {
		return nil, err
	}
	t := time.NewTimer(requestTimeout)
	defer t.Stop()
	select {
	case resp := <-ch:
		return resp, nil
	case <-t.C:
		return nil, context.DeadlineExceeded
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.ctx.Done():
		return nil, errConnClosed
	}
}

// nextID returns a fresh id for a node the server sends.
func (c *conn) nextID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.nextReq++
	return "srv-" + strconv.Itoa(c.nextReq)
}

var errConnClosed = errors.New("the device disconnected")

// deliverResponse hands an IQ answer to the request waiting for it.
func (c *conn) deliverResponse(node *waBinary.Node) {
	id, _ := node.Attrs["id"].(string)
	c.mu.Lock()
	ch := c.waiters[id]
	c.mu.Unlock()
	if ch != nil {
		select {
		case ch <- node:
		default:
		}
	}
}

// reply answers a client IQ with a result holding content.
func (c *conn) reply(req *waBinary.Node, content ...waBinary.Node) {
	node := waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"id": req.Attrs["id"], "type": "result", "from": types.ServerJID}}
	if len(content) > 0 {
		node.Content = content
	}
	if err := c.send(node); err != nil {
		c.log.Debug("wasim: reply", "err", err)
	}
}

// replyError answers a client IQ with an error.
func (c *conn) replyError(req *waBinary.Node, code int, text string) {
	node := waBinary.Node{Tag: "iq", Attrs: waBinary.Attrs{"id": req.Attrs["id"], "type": "error", "from": types.ServerJID},
		Content: []waBinary.Node{{Tag: "error", Attrs: waBinary.Attrs{"code": code, "text": text}}}}
	if err := c.send(node); err != nil {
		c.log.Debug("wasim: reply", "err", err)
	}
}
