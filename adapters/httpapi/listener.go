package httpapi

import (
	"bytes"
	"net"
	"strconv"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
)

// Listener wraps ln so that the answers net/http writes on its own, before
// any handler runs, come in the envelope like every other answer: 431 for
// headers past http.Server.MaxHeaderBytes, 400 for a malformed request
// line or header, 501 for an unknown transfer encoding. net/http writes
// those as plain text straight to the connection, with no hook to change
// them; this is the one place that sees them.
func Listener(ln net.Listener) net.Listener { return envelopeListener{ln} }

type envelopeListener struct{ net.Listener }

func (l envelopeListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &envelopeConn{Conn: c}, nil
}

// envelopeConn rewrites net/http's plain-text error answers.
type envelopeConn struct{ net.Conn }

// plainErrorHeaders is what follows the status line in every plain answer
// of net/http's (server.go, conn.serve); answers from handlers always
// carry a Date header as well, so they never match.
const plainErrorHeaders = "\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n"

func (c *envelopeConn) Write(p []byte) (int, error) {
	if len(p) < 13 || p[9] < '4' || !bytes.HasPrefix(p, []byte("HTTP/1.1 ")) {
		return c.Conn.Write(p)
	}
	head, body, ok := bytes.Cut(p, []byte(plainErrorHeaders))
	status, err := strconv.Atoi(string(p[9:12]))
	if !ok || err != nil || bytes.IndexByte(head, '\n') >= 0 {
		return c.Conn.Write(p)
	}
	msg := plainMessage(status, string(body))
	var out bytes.Buffer
	out.Write(head) // the status line, as net/http wrote it
	out.WriteString("\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\nContent-Length: ")
	js := envelope.Marshal(status, msg, nil)
	out.WriteString(strconv.Itoa(len(js)))
	out.WriteString("\r\n\r\n")
	out.Write(js)
	if _, err := c.Conn.Write(out.Bytes()); err != nil {
		return 0, err
	}
	return len(p), nil
}

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
