package wasim

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/domain"
)

var _ sandbox.Network = (*Remote)(nil)

// Remote is a simulator running in another process (`whatsapp simulator`),
// reached over its HTTP API: it implements sandbox.Network by calling the
// simulator's /sandbox API, and HTTPClient carries whatsmeow's connections
// to its protocol endpoint on the same port. Several gateways attached to
// one simulator share one simulated WhatsApp. Its methods are safe for
// concurrent use.
type Remote struct {
	base string // scheme://host:port, no trailing slash
	addr string // host:port, what HTTPClient dials
	api  *http.Client
}

// remoteWait bounds a call whose context has no deadline: a scan waits for
// the device to finish linking, which takes seconds on a loaded machine.
const remoteWait = 2 * time.Minute

// NewRemote returns the client of the simulator at rawURL, an http URL of
// a host and port with no path, credentials or query
// ("http://127.0.0.1:3100"). It does not contact the simulator.
func NewRemote(rawURL string) (*Remote, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	switch {
	case u.Scheme != "http":
		return nil, errors.New("want an http:// URL (the simulator serves plain HTTP)")
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("the URL has no host")
	case u.User != nil:
		return nil, errors.New("the simulator takes no credentials in its URL")
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return nil, errors.New("want only a scheme, host and port, as in http://127.0.0.1:3100")
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	return &Remote{
		base: "http://" + u.Host,
		addr: addr,
		api:  &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}},
	}, nil
}

// URL is the simulator's base URL.
func (r *Remote) URL() string { return r.base }

// HTTPClient returns a new client that dials the simulator whatever address
// it is asked for, as Server.HTTPClient does for one in this process: give
// it to whatsmeow's SetPreLoginHTTPClient and SetWebsocketHTTPClient.
func (r *Remote) HTTPClient() *http.Client {
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.addr)
	}
	return &http.Client{Transport: &http.Transport{DialContext: dial, DialTLSContext: dial, DisableKeepAlives: true}}
}

// Close closes the API client's idle connections.
func (r *Remote) Close() error {
	r.api.CloseIdleConnections()
	return nil
}

// call sends a request to the simulator's API (body, when not nil, as
// JSON) and decodes the envelope's data into out (when not nil). An error
// answer becomes the domain error of its status, with the simulator's
// message; a simulator that cannot be reached is EUNAVAILABLE.
func (r *Remote) call(ctx context.Context, method, path string, body, out any) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, remoteWait)
		defer cancel()
	}
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return domain.Wrap(domain.EINTERNAL, err, "encoding a request to the simulator")
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, r.base+path, rd)
	if err != nil {
		return domain.Wrap(domain.EINTERNAL, err, "a request to the simulator")
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.api.Do(req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.DeadlineExceeded) {
			return domain.Wrap(domain.ETIMEOUT, err, "the simulator did not answer in time")
		}
		return domain.Wrap(domain.EUNAVAILABLE, err, "the simulator at "+r.base+" cannot be reached")
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return domain.Wrap(domain.EUNAVAILABLE, err, "reading the simulator's answer")
	}
	var env struct {
		Code    int             `json:"code"`
		Message string          `json:"message"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return domain.Wrap(domain.EINTERNAL, fmt.Errorf("%s %s: %d, not the envelope: %.200q", method, path, resp.StatusCode, raw), "the simulator's answer")
	}
	if resp.StatusCode != http.StatusOK {
		return remoteError(resp.StatusCode, env.Message, method, path)
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return domain.Wrap(domain.EINTERNAL, fmt.Errorf("%s %s: %w", method, path, err), "the simulator's answer")
		}
	}
	return nil
}

// remoteError is the domain error of an error answer: the code its status
// stands for, with the simulator's message, so that the gateway's own
// /sandbox API answers what the simulator answered.
func remoteError(status int, msg, method, path string) error {
	code := domain.EINTERNAL
	switch status {
	case http.StatusBadRequest:
		code = domain.EINVALID
	case http.StatusNotFound:
		code = domain.ENOTFOUND
	case http.StatusConflict:
		code = domain.ECONFLICT
	case http.StatusServiceUnavailable:
		code = domain.EUNAVAILABLE
	case http.StatusGatewayTimeout:
		code = domain.ETIMEOUT
	}
	if code == domain.EINTERNAL {
		return domain.Wrap(code, fmt.Errorf("%s %s: %d %s", method, path, status, msg), "the simulator failed")
	}
	return domain.Errorf(code, "%s", msg)
}

// CreatePhone implements sandbox.Network.
func (r *Remote) CreatePhone(ctx context.Context, phone, pushName string) (sandbox.Phone, error) {
	var out struct {
		Phone    string `json:"phone"`
		PushName string `json:"push_name"`
		JID      string `json:"jid"`
	}
	in := struct {
		Phone    string `json:"phone"`
		PushName string `json:"push_name,omitempty"`
	}{phone, pushName}
	if err := r.call(ctx, http.MethodPost, "/sandbox/phones", in, &out); err != nil {
		return sandbox.Phone{}, err
	}
	return sandbox.Phone{Phone: out.Phone, PushName: out.PushName, JID: out.JID}, nil
}

type remoteLink struct {
	JID string `json:"jid"`
}

// Scan implements sandbox.Network.
func (r *Remote) Scan(ctx context.Context, phone, qr string) (string, error) {
	var out remoteLink
	err := r.call(ctx, http.MethodPost, "/sandbox/phones/"+url.PathEscape(phone)+"/scan", map[string]string{"qr": qr}, &out)
	return out.JID, err
}

// EnterCode implements sandbox.Network.
func (r *Remote) EnterCode(ctx context.Context, phone, code string) (string, error) {
	var out remoteLink
	err := r.call(ctx, http.MethodPost, "/sandbox/phones/"+url.PathEscape(phone)+"/link-code", map[string]string{"code": code}, &out)
	return out.JID, err
}

// Devices implements sandbox.Network.
func (r *Remote) Devices(ctx context.Context, phone string) ([]sandbox.Device, error) {
	var out []struct {
		JID      string    `json:"jid"`
		LinkedAt time.Time `json:"linked_at"`
		Online   bool      `json:"online"`
	}
	if err := r.call(ctx, http.MethodGet, "/sandbox/phones/"+url.PathEscape(phone)+"/devices", nil, &out); err != nil {
		return nil, err
	}
	ds := make([]sandbox.Device, 0, len(out))
	for _, d := range out {
		ds = append(ds, sandbox.Device{JID: d.JID, LinkedAt: d.LinkedAt, Online: d.Online})
	}
	return ds, nil
}

// RemoveDevice implements sandbox.Network.
func (r *Remote) RemoveDevice(ctx context.Context, phone, jid string) error {
	return r.call(ctx, http.MethodDelete, "/sandbox/phones/"+url.PathEscape(phone)+"/devices/"+url.PathEscape(jid), nil, nil)
}

// SendFromPhone implements sandbox.Network.
func (r *Remote) SendFromPhone(ctx context.Context, phone, to, text string) (sandbox.Sent, error) {
	var out struct {
		ID        string    `json:"message_id"`
		Timestamp time.Time `json:"timestamp"`
		Delivered []string  `json:"delivered"`
		Offline   []string  `json:"offline"`
	}
	in := map[string]string{"to": to, "message": text}
	if err := r.call(ctx, http.MethodPost, "/sandbox/phones/"+url.PathEscape(phone)+"/send", in, &out); err != nil {
		return sandbox.Sent{}, err
	}
	return sandbox.Sent{ID: out.ID, Timestamp: out.Timestamp, Delivered: out.Delivered, Offline: out.Offline}, nil
}

// Messages implements sandbox.Network.
func (r *Remote) Messages(ctx context.Context, phone string) ([]sandbox.Message, error) {
	var out []struct {
		From      string    `json:"from"`
		ID        string    `json:"id"`
		Timestamp time.Time `json:"timestamp"`
		Text      string    `json:"text"`
		Chat      string    `json:"chat"`
		FromMe    bool      `json:"from_me"`
	}
	if err := r.call(ctx, http.MethodGet, "/sandbox/phones/"+url.PathEscape(phone)+"/messages", nil, &out); err != nil {
		return nil, err
	}
	ms := make([]sandbox.Message, 0, len(out))
	for _, m := range out {
		ms = append(ms, sandbox.Message{From: m.From, ID: m.ID, Timestamp: m.Timestamp, Text: m.Text, Chat: m.Chat, FromMe: m.FromMe})
	}
	return ms, nil
}

// Connections implements sandbox.Network.
func (r *Remote) Connections(ctx context.Context) (sandbox.Connections, error) {
	var out struct {
		Open        int            `json:"open"`
		LoggedIn    int            `json:"logged_in"`
		ByDevice    map[string]int `json:"by_device"`
		Attempts    int            `json:"attempts"`
		MaxByDevice map[string]int `json:"max_by_device"`
	}
	if err := r.call(ctx, http.MethodGet, "/sandbox/connections", nil, &out); err != nil {
		return sandbox.Connections{}, err
	}
	return sandbox.Connections{Open: out.Open, LoggedIn: out.LoggedIn, ByDevice: out.ByDevice, Attempts: out.Attempts, MaxByDevice: out.MaxByDevice}, nil
}

// Disrupt implements sandbox.Network. The API counts a refusal in whole
// seconds: a shorter one is rounded up.
func (r *Remote) Disrupt(ctx context.Context, f sandbox.NetworkFault) (int, error) {
	if f.Refuse < 0 {
		return 0, domain.Errorf(domain.EINVALID, "refusal must not be negative")
	}
	in := struct {
		Drop          bool `json:"drop"`
		RefuseSeconds int  `json:"refuse_seconds"`
	}{f.Drop, int(math.Ceil(f.Refuse.Seconds()))}
	var out struct {
		Dropped int `json:"dropped"`
	}
	err := r.call(ctx, http.MethodPost, "/sandbox/network", in, &out)
	return out.Dropped, err
}

// CertificateRoot implements sandbox.Network: the simulator's root, which
// a gateway attached to it must trust.
func (r *Remote) CertificateRoot(ctx context.Context) ([32]byte, error) {
	var out struct {
		PublicKey []byte `json:"public_key"`
	}
	if err := r.call(ctx, http.MethodGet, "/sandbox/certificate-root", nil, &out); err != nil {
		return [32]byte{}, err
	}
	if len(out.PublicKey) != 32 {
		return [32]byte{}, domain.Errorf(domain.EINTERNAL, "the simulator's certificate root is %d bytes, not 32", len(out.PublicKey))
	}
	return [32]byte(out.PublicKey), nil
}
