package proc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/api"
)

// Envelope is every JSON answer of the gateway.
type Envelope struct {
	Code    int             `json:"code"`
	Message string          `json:"message"`
	Data    json.RawMessage `json:"data"`
}

// Do sends a request with the gateway's credentials; body, when not nil,
// is sent as JSON (a string or []byte as it is). It returns the status and
// the decoded envelope; an answer that is not the envelope is an error.
func (g *Gateway) Do(method, path string, body any, hdr ...string) (int, Envelope, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return 0, Envelope{}, err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, g.URL+path, rd)
	if err != nil {
		return 0, Envelope{}, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if g.User != "" {
		req.SetBasicAuth(g.User, g.Pass)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, Envelope{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, Envelope{}, err
	}
	var env Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return resp.StatusCode, Envelope{}, fmt.Errorf("%s %s: %d, not the envelope: %.200q", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode, env, nil
}

// Call is Do that wants a 200 and decodes data into out (when not nil).
func (g *Gateway) Call(method, path string, body, out any, hdr ...string) error {
	code, env, err := g.Do(method, path, body, hdr...)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("%s %s: %d %s", method, path, code, env.Message)
	}
	if out != nil {
		if err := json.Unmarshal(env.Data, out); err != nil {
			return fmt.Errorf("%s %s: data: %w", method, path, err)
		}
	}
	return nil
}

// CreatePhone creates a simulated account.
func (g *Gateway) CreatePhone(phone, name string) error {
	return g.Call("POST", "/sandbox/phones", map[string]string{"phone": phone, "push_name": name}, nil)
}

// Login starts (or repeats) QR pairing of device id.
func (g *Gateway) Login(id string) (api.LoginQR, error) {
	var qr api.LoginQR
	err := g.Call("GET", "/devices/"+id+"/login", nil, &qr)
	return qr, err
}

// Scan makes phone scan qr and returns the linked JID.
func (g *Gateway) Scan(phone, qr string) (string, error) {
	var link api.SandboxLink
	err := g.Call("POST", "/sandbox/phones/"+phone+"/scan", map[string]string{"qr": qr}, &link)
	return link.Jid, err
}

// Status returns device id's status.
func (g *Gateway) Status(id string) (api.Device, error) {
	var d api.Device
	err := g.Call("GET", "/devices/"+id+"/status", nil, &d)
	return d, err
}

// Devices lists every device.
func (g *Gateway) Devices() ([]api.Device, error) {
	var ds []api.Device
	err := g.Call("GET", "/devices", nil, &ds)
	return ds, err
}

// WaitState polls device id until it is in state.
func (g *Gateway) WaitState(id string, state api.DeviceState, within time.Duration) (api.Device, error) {
	deadline := time.Now().Add(within)
	for {
		d, err := g.Status(id)
		if err == nil && d.State == state {
			return d, nil
		}
		if done, _ := g.Exited(); done {
			return d, fmt.Errorf("device %s: the gateway exited before it was %s", id, state)
		}
		if time.Now().After(deadline) {
			return d, fmt.Errorf("device %s not %s within %s (state %s, err %v)", id, state, within, d.State, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LinkQR links device id to phone by QR and waits until it is connected.
// It returns the device's JID.
func (g *Gateway) LinkQR(id, phone string) (string, error) {
	qr, err := g.Login(id)
	if err != nil {
		return "", err
	}
	jid, err := g.Scan(phone, qr.QrString)
	if err != nil {
		return "", err
	}
	d, err := g.WaitState(id, api.Connected, 60*time.Second)
	if err != nil {
		return "", err
	}
	if d.Jid == nil || *d.Jid != jid {
		return "", fmt.Errorf("device %s is %v, the phone linked %s", id, d.Jid, jid)
	}
	return jid, nil
}

// Connections is GET /sandbox/connections. Attempts is nil when the
// gateway does not report it.
type Connections struct {
	Open     int            `json:"open"`
	LoggedIn int            `json:"logged_in"`
	ByDevice map[string]int `json:"by_device"`
	Attempts *int           `json:"attempts"`
	// MaxByDevice is the most connections each device had at once.
	MaxByDevice map[string]int `json:"max_by_device"`
}

// Connections counts the connections open to the simulator.
func (g *Gateway) Connections() (Connections, error) {
	var c Connections
	err := g.Call("GET", "/sandbox/connections", nil, &c)
	return c, err
}

// NetworkFault drops every connection to the simulator (when drop) and
// refuses new ones for refuse. It returns how many were dropped.
func (g *Gateway) NetworkFault(drop bool, refuse time.Duration) (int, error) {
	var out struct {
		Dropped int `json:"dropped"`
	}
	err := g.Call("POST", "/sandbox/network", map[string]any{"drop": drop, "refuse_seconds": int(refuse / time.Second)}, &out)
	return out.Dropped, err
}

// Send sends text from device id to phone and returns the message id.
func (g *Gateway) Send(id, phone, text string) (string, error) {
	var sent api.SentMessage
	err := g.Call("POST", "/send/message", map[string]string{"phone": phone, "message": text}, &sent, "X-Device-Id", id)
	return sent.MessageID, err
}

// Metric reads one unlabelled sample from GET /metrics (Prometheus text).
func (g *Gateway) Metric(name string) (float64, error) {
	req, err := http.NewRequest("GET", g.URL+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	if g.User != "" {
		req.SetBasicAuth(g.User, g.Pass)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("/metrics has no %s", name)
}

// CloseIdle closes the client's idle keep-alive connections.
func (g *Gateway) CloseIdle() { g.client.CloseIdleConnections() }
