// Package wasim is an in-process fake of the WhatsApp multi-device server,
// with the simulated phones (accounts) around it. An unmodified whatsmeow
// Client talks to it over loopback, pointed at it with the library's own
// setters:
//
//	whatsmeow.WACertPubKey = wasim.RootPublicKey() // once per process, before any Connect
//	cli.SetPreLoginHTTPClient(srv.HTTPClient())
//	cli.SetWebsocketHTTPClient(srv.HTTPClient())
//
// It links devices by QR or pairing code, logs them in, serves prekeys and
// device lists, decrypts what they send to the simulated phones into the
// phones' inboxes, logs devices out the ways WhatsApp does, and lets tests
// break connections on purpose. Server implements sandbox.Network.
//
// A Server can also run as a process of its own (`whatsapp simulator`):
// Options.Listener and Options.API serve the protocol and the sandbox API on
// one port, Options.OwnRoot gives it a certificate root that survives
// restarts, and Remote is the sandbox.Network and HTTP client of a gateway
// in another process attached to it.
package wasim

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/util/keys"

	"github.com/gowa-dev/gowa/adapters/sandbox"
)

var _ sandbox.Network = (*Server)(nil)

// Options configure a Server.
type Options struct {
	Dir    string       // where the simulated world persists; "" keeps it in memory
	Logger *slog.Logger // nil: discard
	// Now is the server's clock for certificate dates; nil is time.Now.
	Now func() time.Time
	// Listener is where the server serves; nil listens on a loopback port
	// of its own. The server closes it at Close.
	Listener net.Listener
	// API, when set, makes the handler that answers every request that is
	// not a websocket upgrade (the standalone simulator's /sandbox API),
	// given the server, before it serves; without it such a request gets
	// the websocket library's refusal.
	API func(*Server) http.Handler
	// OwnRoot makes the server sign its certificates with a root of its
	// own, kept in Dir (root.key, made on the first start) when Dir is set,
	// instead of the process-wide RootPublicKey. A standalone simulator
	// uses it: its clients, in other processes, trust the key they fetch
	// from CertificateRoot, and keep trusting a restarted simulator.
	OwnRoot bool
}

// Server is the simulated WhatsApp network. Its methods are safe for
// concurrent use.
type Server struct {
	log    *slog.Logger
	static *keys.KeyPair // the server's Noise static key
	root   *keys.KeyPair // the certificate root the chain is signed by
	api    http.Handler  // non-websocket requests; nil: none
	now    func() time.Time
	addr   string
	http   *http.Server
	world  *world

	ctx    context.Context // ends at Close: stops waiters and delayed closes
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the server started

	certMu    sync.Mutex
	cert      []byte    // marshalled chain from the static key to the root
	certUntil time.Time // the chain's notAfter

	// Messages the phones send (send.go): receipts awaited, and messages
	// held for devices that are offline.
	receipts  receiptWaiters
	offlineMu sync.Mutex
	offline   map[string][]waBinary.Node

	mu          sync.Mutex
	closed      bool
	conns       map[*conn]struct{}
	nextConnID  uint64
	qrRefs      map[string]*conn        // QR ref → the pre-login connection showing it
	codeReqs    map[string]*codeRequest // phone digits → the pairing code a device asked for
	refuseUntil time.Time
	attempts    int
	hook        func(ConnInfo, *waBinary.Node) bool
	// maxByDevice is, per device JID, the most connections ever logged in
	// as it at once: a login that replaces a live connection counts two.
	maxByDevice map[string]int
}

// New opens the world in opts.Dir and starts serving on opts.Listener, or
// on a loopback port.
func New(opts Options) (_ *Server, err error) {
	if opts.Listener != nil {
		defer func() {
			if err != nil {
				opts.Listener.Close()
			}
		}()
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	static := keys.NewKeyPair()
	root := rootKey()
	if opts.OwnRoot {
		if root, err = loadRoot(opts.Dir); err != nil {
			return nil, err
		}
	}
	cert, certUntil, err := certChain(static, root, now())
	if err != nil {
		return nil, fmt.Errorf("wasim: certificate chain: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	db, signal, err := openDB(ctx, opts.Dir)
	if err != nil {
		cancel()
		return nil, err
	}
	w := newWorld(db, signal)
	if err := w.load(ctx); err != nil {
		cancel()
		db.Close()
		signal.Close()
		return nil, fmt.Errorf("wasim: load %s: %w", opts.Dir, err)
	}
	ln := opts.Listener
	if ln == nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			cancel()
			db.Close()
			signal.Close()
			return nil, fmt.Errorf("wasim: listen: %w", err)
		}
	}
	s := &Server{
		log: log, static: static, root: root, now: now, cert: cert, certUntil: certUntil, addr: ln.Addr().String(), world: w,
		ctx: ctx, cancel: cancel,
		conns: map[*conn]struct{}{}, qrRefs: map[string]*conn{}, codeReqs: map[string]*codeRequest{},
		maxByDevice: map[string]int{},
	}
	if opts.API != nil {
		s.api = opts.API(s)
	}
	s.http = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("wasim: serve", "err", err)
		}
	}()
	log.Info("wasim: listening", "addr", s.addr, "persistent", opts.Dir != "")
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() string { return s.addr }

// HTTPClient returns a new client that dials the simulator whatever address
// it is asked for. Give it to whatsmeow's SetPreLoginHTTPClient and
// SetWebsocketHTTPClient: the request keeps host web.whatsapp.com, and since
// the "TLS" dial returns a plain connection, net/http sends cleartext.
func (s *Server) HTTPClient() *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", s.addr)
	}
	// No keep-alive: a refused upgrade would otherwise leave an idle
	// connection (and its two goroutines) in the pool for good.
	return &http.Client{Transport: &http.Transport{DialContext: dial, DialTLSContext: dial, DisableKeepAlives: true}}
}

// Close closes every connection, waits for every goroutine the server
// started, and closes the stores.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.cancel()
	err := s.http.Close()
	for _, c := range conns {
		c.closeNow()
	}
	s.wg.Wait()
	return errors.Join(err, s.world.db.Close(), s.world.signal.Close())
}

// spawn runs f in a goroutine that Close waits for, unless the server is
// already closing.
func (s *Server) spawn(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// serveHTTP accepts a websocket on any path and runs the connection; any
// other request goes to the API, when there is one.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if s.api != nil && !isUpgrade(r) {
		s.api.ServeHTTP(w, r)
		return
	}
	s.mu.Lock()
	s.attempts++
	refuse := time.Now().Before(s.refuseUntil)
	closed := s.closed
	if !closed && !refuse {
		s.wg.Add(1)
		defer s.wg.Done()
	}
	s.mu.Unlock()
	if closed || refuse {
		w.Header().Set("Connection", "close")
		http.Error(w, "refused by the simulator", http.StatusServiceUnavailable)
		return
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		s.log.Debug("wasim: websocket upgrade failed", "err", err)
		return
	}
	// The first prekey upload is one 40 KB frame, above the default limit.
	ws.SetReadLimit(32 << 20)
	c := s.newConn(ws)
	if c == nil {
		ws.CloseNow()
		return
	}
	defer s.dropConn(c)
	c.run()
}

// isUpgrade tells a websocket upgrade request (RFC 6455 section 4.1: a
// Connection header with the token "upgrade", an Upgrade header with
// "websocket").
func isUpgrade(r *http.Request) bool {
	return headerHasToken(r.Header, "Connection", "upgrade") && headerHasToken(r.Header, "Upgrade", "websocket")
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func (s *Server) newConn(ws *websocket.Conn) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.nextConnID++
	ctx, cancel := context.WithCancel(s.ctx)
	c := &conn{srv: s, id: s.nextConnID, ws: ws, ctx: ctx, cancel: cancel, waiters: map[string]chan *waBinary.Node{}}
	c.log = s.log.With("conn", c.id)
	s.conns[c] = struct{}{}
	return c
}

// dropConn forgets a finished connection and everything pointing at it.
func (s *Server) dropConn(c *conn) {
	c.cancel()
	c.ws.CloseNow()
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	for ref, rc := range s.qrRefs {
		if rc == c {
			delete(s.qrRefs, ref)
		}
	}
	for phone, req := range s.codeReqs {
		if req.conn == c {
			delete(s.codeReqs, phone)
		}
	}
}

// DropConnections closes the sockets of every connection logged in as jid,
// or of every connection when jid is "", without a goodbye: whatsmeow sees a
// network drop and reconnects. It returns how many it closed that were not
// already closing.
func (s *Server) DropConnections(jid string) int {
	var victims []*conn
	s.mu.Lock()
	for c := range s.conns {
		if jid == "" || c.deviceJID() == jid {
			victims = append(victims, c)
		}
	}
	s.mu.Unlock()
	dropped := 0
	for _, c := range victims {
		if !c.isClosing() { // as Connections counts them
			dropped++
		}
		c.closeNow()
	}
	s.log.Info("wasim: dropped connections", "count", dropped)
	return dropped
}

// RefuseConnections answers every websocket upgrade in the next d with HTTP
// 503, as an unreachable WhatsApp would.
func (s *Server) RefuseConnections(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refuseUntil = time.Now().Add(d)
}

// SetHook installs h, which sees every node a client sends before the
// server does; when it returns true the server does nothing more with the
// node. Tests use it to script failures and odd answers. nil clears it.
func (s *Server) SetHook(h func(conn ConnInfo, node *waBinary.Node) (handled bool)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hook = h
}

func (s *Server) currentHook() func(ConnInfo, *waBinary.Node) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hook
}

// connsOf returns the logged-in connections of jid.
func (s *Server) connsOf(jid string) []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*conn
	for c := range s.conns {
		if c.deviceJID() == jid {
			out = append(out, c)
		}
	}
	return out
}
