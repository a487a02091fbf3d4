package httpapi

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

// DefaultWriteTimeout is how long one write to a connection may take
// when ListenerConfig.WriteTimeout is 0.
const DefaultWriteTimeout = 30 * time.Second

// ListenerConfig is what NewListener's connections need beyond the
// connection itself.
type ListenerConfig struct {
	// WriteTimeout bounds every write to a connection (0:
	// DefaultWriteTimeout): a client that stops reading its answer is cut
	// off once the connection's buffers are full and a write has waited
	// this long, instead of holding a goroutine and its answer for ever.
	// The bound is per write, not per answer, so an event stream that its
	// client keeps reading runs as long as it likes.
	WriteTimeout time.Duration
	// AccessLog and Metrics, when set, log and count net/http's own
	// refusals as the handler's middleware does every other answer (with
	// empty method and path: net/http refuses before it parses them, and
	// the peer's address as the client IP).
	AccessLog io.Writer
	Metrics   *middleware.Metrics
}

// Listener is NewListener with the default configuration.
func Listener(ln net.Listener) net.Listener { return NewListener(ln, ListenerConfig{}) }

// NewListener wraps ln so that the answers net/http writes on its own,
// before any handler runs, come in the envelope like every other answer,
// with an X-Request-Id, and reach the access log: 431 for headers past
// http.Server.MaxHeaderBytes, 400 for a malformed request line or header,
// 501 for an unknown transfer encoding. net/http writes those as plain
// text straight to the connection, with no hook to change them; this is
// the one place that sees them. It also bounds every write (see
// ListenerConfig.WriteTimeout).
func NewListener(ln net.Listener, cfg ListenerConfig) net.Listener {
	cfg.WriteTimeout = orDefault(cfg.WriteTimeout, DefaultWriteTimeout)
	return envelopeListener{Listener: ln, cfg: &listenerConfig{
		ListenerConfig: cfg,
		// A deadline is refreshed at most this often, so that a busy
		// connection does not pay a timer update per answer; a write
		// always starts with at least WriteTimeout less this left.
		refresh: min(cfg.WriteTimeout/16, time.Second),
		ids:     middleware.NewRequestIDs(),
	}}
}

type listenerConfig struct {
	ListenerConfig
	refresh time.Duration
	ids     *middleware.RequestIDs
}

type envelopeListener struct {
	net.Listener
	cfg *listenerConfig
}

func (l envelopeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &envelopeConn{Conn: c, cfg: l.cfg}, nil
}

// envelopeConn rewrites net/http's plain-text error answers and bounds
// writes.
type envelopeConn struct {
	net.Conn
	cfg *listenerConfig
	// deadlineSet is when the write deadline was last set here (Unix
	// nanoseconds), 0 after a handler set one of its own.
	deadlineSet atomic.Int64
}

// SetWriteDeadline sets the connection's write deadline for a handler
// (through http.ResponseController) or for net/http, which clears it after
// every answer. Clearing it leaves this connection's own bound in place:
// every write starts with it anyway (boundWrite), and keeping the timer
// saves two timer updates per answer. Any other deadline is set, and the
// next write sets the connection's bound again.
func (c *envelopeConn) SetWriteDeadline(t time.Time) error {
	if t.IsZero() && c.deadlineSet.Load() != 0 {
		return nil
	}
	c.deadlineSet.Store(0)
	return c.Conn.SetWriteDeadline(t)
}

// boundWrite makes sure the write about to start has its deadline.
func (c *envelopeConn) boundWrite() {
	now := time.Now()
	if set := c.deadlineSet.Load(); set != 0 && now.UnixNano()-set < int64(c.cfg.refresh) {
		return
	}
	_ = c.Conn.SetWriteDeadline(now.Add(c.cfg.WriteTimeout))
	c.deadlineSet.Store(now.UnixNano())
}

// plainErrorHeaders is what follows the status line in every plain answer
// of net/http's (server.go, conn.serve); answers from handlers always
// carry a Date header as well, so they never match.
const plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *envelopeConn) Write(p []byte) (int, error) {
	c.boundWrite()
	if len(p) < 13 || p[9] < '4' || !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(p)
	}
	head, body, ok := bytes.Cut(p, []byte(plainErrorHeaders))
	status, err := strconv.Atoi(string(p[9:12]))
	if !ok || err != nil || bytes.IndexByte(head, '\n') >= 0 {
		return c.Conn.Write(p)
	}
	msg := plainMessage(status, string(body))
	// A request of its own for the request id and the access log: net/http
	// refused it before parsing its method, path or headers.
	r := &http.Request{URL: &url.URL{}, Header: http.Header{}, RemoteAddr: c.RemoteAddr().String()}
	ip, _ := middleware.ResolveClient(nil, r)
	w := &headerOnly{header: http.Header{}}
	id := c.cfg.ids.Assign(w, r, ip, "").ID()
	var out bytes.Buffer
	out.Write(head) // the status line, as net/http wrote it
	out.WriteString("\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: ")
	out.WriteString(id)
	out.WriteString("\r\nConnection: close\r\nContent-Length: ")
	js := envelope.Marshal(status, msg, nil)
	out.WriteString(strconv.Itoa(len(js)))
	out.WriteString("\r\n\r\n")
	out.Write(js)
	now := time.Now()
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.Series("", "", status).Observe(0)
	}
	middleware.WriteAccessLine(c.cfg.AccessLog, r, &middleware.AccessLine{
		Start: now, End: now, Status: status, Bytes: int64(len(js)), ClientIP: ip, RequestID: id,
	})
	if _, err := c.Conn.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

// headerOnly is a ResponseWriter that only keeps headers, for
// RequestIDs.Assign outside a handler.
type headerOnly struct{ header http.Header }

func (h *headerOnly) Header() http.Header       { return h.header }
func (h *headerOnly) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }
func (h *headerOnly) WriteHeader(int)           {}

// plainMessage words net/http's refusals in the API's terms.
func plainMessage(status int, text string) string {
	switch status {
	case 431:
		return "request headers too large"
	case 501:
		return "unsupported transfer encoding"
	}
	// "400 Bad Request" or "400 Bad Request: missing required Host header".
	if _, why, ok := bytes.Cut([]byte(text), []byte(": ")); ok {
		return "malformed request: " + string(why)
	}
	return "malformed request"
}

// CloseWrite keeps net/http's graceful close (closeWriteAndWait) working
// through the wrapper.
func (c *envelopeConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
