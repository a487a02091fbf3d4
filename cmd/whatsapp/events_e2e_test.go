package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/webhook"
	"github.com/gowa-dev/gowa/api"
)

// liveEvent is an event as the stream and webhooks carry it.
type liveEvent struct {
	ID       int64           `json:"id"`
	Type     string          `json:"type"`
	DeviceID string          `json:"device_id"`
	Time     time.Time       `json:"time"`
	Data     json.RawMessage `json:"data"`
}

func (e liveEvent) field(name string) string {
	var m map[string]any
	_ = json.Unmarshal(e.Data, &m)
	switch v := m[name].(type) {
	case string:
		return v
	case bool:
		return strconv.FormatBool(v)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

// stream is an open GET /events, parsed as Server-Sent Events.
type stream struct {
	t      *testing.T
	events chan liveEvent
	cancel context.CancelFunc
	done   chan struct{}
}

// openStream opens the event stream at path ("/events?…") with the extra
// headers given in pairs.
func (tg *testGateway) openStream(path string, hdr ...string) *stream {
	tg.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, tg.url+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if tg.user != "" {
		req.SetBasicAuth(tg.user, tg.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		tg.t.Fatalf("GET %s: %v", path, err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		tg.t.Fatalf("GET %s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	s := &stream{t: tg.t, events: make(chan liveEvent, 1024), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		defer resp.Body.Close()
		defer close(s.events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var id, typ string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "id: "):
				id = line[4:]
			case strings.HasPrefix(line, "event: "):
				typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				var ev liveEvent
				if err := json.Unmarshal([]byte(line[6:]), &ev); err != nil || strconv.FormatInt(ev.ID, 10) != id || ev.Type != typ {
					s.t.Errorf("bad event: id %q event %q data %s: %v", id, typ, line[6:], err)
					return
				}
				s.events <- ev
			}
		}
	}()
	tg.t.Cleanup(s.close)
	return s
}

func (s *stream) close() {
	s.cancel()
	<-s.done
}

// expect reads events until it has seen the given types in order (others
// may come between), and returns the events matched.
func (s *stream) expect(types ...string) []liveEvent {
	s.t.Helper()
	var got []liveEvent
	var seen []string
	timeout := time.After(20 * time.Second)
	for len(got) < len(types) {
		select {
		case ev, ok := <-s.events:
			if !ok {
				s.t.Fatalf("stream ended; saw %v, want %v", seen, types)
			}
			seen = append(seen, ev.Type)
			if ev.Type == types[len(got)] {
				got = append(got, ev)
			}
		case <-timeout:
			s.t.Fatalf("timed out: saw %v, want %v", seen, types)
		}
	}
	return got
}

// getBody returns the body of a GET with the gateway's credentials.
func (tg *testGateway) getBody(path string) string {
	tg.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, tg.url+path, nil)
	if tg.user != "" {
		req.SetBasicAuth(tg.user, tg.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tg.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// receiver is a webhook receiver on loopback that verifies each delivery as
// the README's receivers do.
type receiver struct {
	t      *testing.T
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	got    []liveEvent
	fail   int // answer 500 to this many more deliveries
}

func newReceiver(t *testing.T, secret string) *receiver {
	r := &receiver{t: t, secret: secret}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		if err := webhook.Verify(r.secret, req.Header.Get("X-Gowa-Signature"), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("delivery does not verify: %v", err)
			http.Error(w, "bad signature", 401)
			return
		}
		var ev liveEvent
		if err := json.Unmarshal(body, &ev); err != nil || req.Header.Get("X-Gowa-Event") != ev.Type || req.Header.Get("X-Gowa-Delivery") != strconv.FormatInt(ev.ID, 10) {
			t.Errorf("delivery headers %v for %s", req.Header, body)
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(500)
			return
		}
		r.got = append(r.got, ev)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) types(device string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, ev := range r.got {
		if ev.DeviceID == device {
			out = append(out, ev.Type)
		}
	}
	return out
}

func (r *receiver) waitFor(device string, types ...string) {
	r.t.Helper()
	eventually(r.t, 20*time.Second, func() bool {
		got := r.types(device)
		return len(got) >= len(types) && slices.Equal(got[len(got)-len(types):], types)
	}, "webhook deliveries "+strings.Join(types, ", "))
}

const hookSecret = "0123456789abcdef-test"

func withWebhook(url string) gatewayOption {
	return func(c *Config) { c.Webhook = []string{url}; c.WebhookSecret = hookSecret }
}

func TestEventsStreamWebhookAndResumeAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	rcv := newReceiver(t, hookSecret)
	rcv.fail = 2 // the first deliveries are retried
	tg := startGateway(t, dir, withWebhook(rcv.srv.URL))
	tg.createPhone(alice, "Alice")
	tg.createPhone(bob, "Bob")

	all := tg.openStream("/events")
	onlyConnected := tg.openStream("/events?type=device.connected&device_id=ev-device")
	dev := tg.pairByQR("ev-device", alice)
	got := all.expect("device.created", "device.pairing", "device.connected")
	if got[1].field("method") != "qr" || got[1].field("expires_at") == "" || strings.Contains(string(got[1].Data), "2@") {
		t.Errorf("device.pairing data %s", got[1].Data)
	}
	if got[2].field("jid") != *dev.Jid || got[2].field("phone") != alice || got[2].DeviceID != "ev-device" {
		t.Errorf("device.connected %+v %s", got[2], got[2].Data)
	}
	if !(got[0].ID < got[1].ID && got[1].ID < got[2].ID) {
		t.Errorf("ids not increasing: %d %d %d", got[0].ID, got[1].ID, got[2].ID)
	}
	if ev := onlyConnected.expect("device.connected")[0]; ev.ID != got[2].ID {
		t.Errorf("filtered stream got %+v", ev)
	}
	rcv.waitFor("ev-device", "device.created", "device.pairing", "device.connected")

	// Sending emits message.sent with the id the answer gives.
	code, env := tg.do("POST", "/send/message", `{"phone":"`+bob+`","message":"hi"}`, "X-Device-Id", "ev-device")
	if code != 200 {
		t.Fatalf("send: %d %s", code, env.raw)
	}
	var sent struct {
		MessageID string `json:"message_id"`
	}
	_ = json.Unmarshal(env.Data, &sent)
	if ev := all.expect("message.sent")[0]; ev.field("id") != sent.MessageID || ev.field("text") != "hi" || ev.field("from_me") != "true" {
		t.Errorf("message.sent %s, answer id %s", ev.Data, sent.MessageID)
	}

	out, err := tg.client.LogoutDeviceWithResponse(context.Background(), "ev-device")
	if err != nil || out.JSON200 == nil {
		t.Fatalf("logout: %v %s", err, out.Body)
	}
	lo := all.expect("device.logged_out")[0]
	if lo.field("reason") != "logout" {
		t.Errorf("device.logged_out data %s", lo.Data)
	}
	rcv.waitFor("ev-device", "message.sent", "device.logged_out")
	// In order, each once (at least once may repeat; this receiver answered
	// 2xx to everything it kept).
	if got := rcv.types("ev-device"); !slices.Equal(got, []string{"device.created", "device.pairing", "device.connected", "message.sent", "device.logged_out"}) {
		t.Errorf("webhook got %v", got)
	}

	// The JSON page, for clients that cannot hold a stream.
	code, env = tg.do("GET", "/events?after=0&limit=2&device_id=ev-device", "", "Accept", "application/json")
	var page struct {
		Events    []liveEvent `json:"events"`
		NextAfter int64       `json:"next_after"`
	}
	if err := json.Unmarshal(env.Data, &page); code != 200 || err != nil || len(page.Events) != 2 || page.Events[0].ID != got[0].ID || page.NextAfter != page.Events[1].ID {
		t.Fatalf("page: %d %s", code, env.raw)
	}

	// Metrics: events by type, deliveries by outcome (the receiver failed
	// twice), the outbox and the open streams. Delivered events leave the
	// outbox in a batch once the receiver has answered them all, a moment
	// after it has the last one: wait for the outbox to empty first.
	emptied := `gowa_webhook_outbox_depth{endpoint="global:` + rcv.srv.URL + `"} 0`
	eventually(t, 20*time.Second, func() bool { return strings.Contains(tg.getBody("/metrics"), emptied) }, "the outbox emptied")
	metrics := tg.getBody("/metrics")
	for _, want := range []string{
		`gowa_events_total{type="device.connected"} 1`,
		`gowa_webhook_deliveries_total{endpoint="global:` + rcv.srv.URL + `",outcome="retry"} 2`,
		`gowa_webhook_deliveries_total{endpoint="global:` + rcv.srv.URL + `",outcome="delivered"} 5`,
		emptied,
		`gowa_event_stream_subscribers 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}

	// Restart: a stream resumed from the pairing event misses nothing.
	all.close()
	onlyConnected.close()
	tg.stop()
	tg = startGateway(t, dir, withWebhook(rcv.srv.URL))
	resumed := tg.openStream("/events?device_id=ev-device", "Last-Event-ID", strconv.FormatInt(got[1].ID, 10))
	again := resumed.expect("device.connected", "message.sent", "device.logged_out")
	if again[0].ID != got[2].ID || again[2].ID != lo.ID {
		t.Errorf("resumed stream: %+v", again)
	}
	byQuery := tg.openStream("/events?last_event_id=" + strconv.FormatInt(lo.ID-1, 10))
	if ev := byQuery.expect("device.logged_out")[0]; ev.ID != lo.ID {
		t.Errorf("resumed by query: %+v", ev)
	}
	// Events after the restart get higher ids.
	tg.do("POST", "/devices", `{"device_id":"after-restart"}`)
	fresh := tg.openStream("/events", "Last-Event-ID", strconv.FormatInt(lo.ID, 10))
	if ev := fresh.expect("device.created")[0]; ev.ID <= lo.ID || ev.DeviceID != "after-restart" {
		t.Errorf("event after restart %+v, want an id above %d", ev, lo.ID)
	}
}

func TestEventsBadInput(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir())
	tg.do("POST", "/devices", `{"device_id":"d"}`)
	for _, tc := range []struct{ method, path, body string }{
		{"GET", "/events?type=device.nope", ""},
		{"GET", "/events?type=nope.", ""},
		{"GET", "/events?device_id=a/b", ""},
		{"GET", "/events?limit=0", ""},
		{"PUT", "/devices/d/webhook", `{"url":"ftp://example.com/x","secret":"0123456789abcdef"}`},
		{"PUT", "/devices/d/webhook", `{"url":"http://example.com/x","secret":"short"}`},
		{"PUT", "/devices/d/webhook", `{"url":"http://example.com/x","secret":"0123456789abcdef","events":["message.nope"]}`},
		{"PUT", "/devices/d/webhook", `{"url":"/relative","secret":"0123456789abcdef"}`},
	} {
		hdr := []string{}
		if strings.Contains(tc.path, "limit") {
			hdr = []string{"Accept", "application/json"}
		}
		if code, env := tg.do(tc.method, tc.path, tc.body, hdr...); code != 400 {
			t.Errorf("%s %s %s: %d %s, want 400", tc.method, tc.path, tc.body, code, env.raw)
		}
	}
	if code, _ := tg.do("GET", "/devices/nope/webhook", ""); code != 404 {
		t.Errorf("webhook of a missing device: %d", code)
	}
	if code, _ := tg.do("GET", "/devices/d/webhook", ""); code != 404 {
		t.Errorf("missing webhook: %d", code)
	}
	code, env := tg.do("PUT", "/devices/d/webhook", `{"url":"http://127.0.0.1:9/hook","secret":"0123456789abcdef-secret","events":["device."]}`)
	if code != 200 || strings.Contains(string(env.raw), "secret") {
		t.Fatalf("PUT webhook: %d %s", code, env.raw)
	}
	code, env = tg.do("GET", "/devices/d/webhook", "")
	var w api.Webhook
	if err := json.Unmarshal(env.Data, &w); code != 200 || err != nil || w.URL != "http://127.0.0.1:9/hook" || !slices.Equal(w.Events, []string{"device."}) || strings.Contains(string(env.raw), "0123456789abcdef") {
		t.Fatalf("GET webhook: %d %s", code, env.raw)
	}
	if code, _ := tg.do("DELETE", "/devices/d/webhook", ""); code != 200 {
		t.Fatalf("DELETE webhook: %d", code)
	}
	if code, _ := tg.do("DELETE", "/devices/d/webhook", ""); code != 404 {
		t.Fatalf("second DELETE webhook: %d", code)
	}
}

func TestPhoneMessageArrivesAsMessageReceived(t *testing.T) {
	t.Parallel()
	rcv := newReceiver(t, hookSecret)
	tg := startGateway(t, t.TempDir(), withWebhook(rcv.srv.URL))
	tg.createPhone(alice, "Alice")
	tg.createPhone(bob, "Bob")
	st := tg.openStream("/events?type=message.")
	dev := tg.pairByQR("inbox", alice)

	// Bob writes to Alice: her linked device decrypts it.
	code, env := tg.do("POST", "/sandbox/phones/"+bob+"/send", `{"to":"`+alice+`","message":"Hi Alice"}`)
	var sent api.SandboxSent
	if err := json.Unmarshal(env.Data, &sent); code != 200 || err != nil || !slices.Contains(sent.Delivered, *dev.Jid) {
		t.Fatalf("phone send: %d %s", code, env.raw)
	}
	ev := st.expect("message.received")[0]
	if ev.DeviceID != "inbox" || ev.field("id") != sent.MessageID || ev.field("text") != "Hi Alice" || ev.field("type") != "text" ||
		ev.field("from") != bob+"@s.whatsapp.net" || ev.field("chat") != bob+"@s.whatsapp.net" || ev.field("from_me") != "false" || ev.field("push_name") != "Bob" {
		t.Errorf("message.received %s", ev.Data)
	}
	// A second message uses the session the first one started.
	if code, env := tg.do("POST", "/sandbox/phones/"+bob+"/send", `{"to":"`+alice+`@s.whatsapp.net","message":"again"}`); code != 200 {
		t.Fatalf("second phone send: %d %s", code, env.raw)
	}
	if ev := st.expect("message.received")[0]; ev.field("text") != "again" {
		t.Errorf("second message %s", ev.Data)
	}
	// Alice's phone writes to Bob: her linked device sees it as from_me.
	if code, env := tg.do("POST", "/sandbox/phones/"+alice+"/send", `{"to":"`+bob+`","message":"from my phone"}`); code != 200 {
		t.Fatalf("own phone send: %d %s", code, env.raw)
	}
	if ev := st.expect("message.received")[0]; ev.field("from_me") != "true" || ev.field("chat") != bob+"@s.whatsapp.net" || ev.field("text") != "from my phone" {
		t.Errorf("from_me copy %s", ev.Data)
	}
	rcv.waitFor("inbox", "message.received", "message.received", "message.received")

	// A device that is offline gets it when it comes back.
	if code, _ := tg.do("POST", "/sandbox/network", `{"drop":true,"refuse_seconds":2}`); code != 200 {
		t.Fatal("network fault")
	}
	eventually(t, 10*time.Second, func() bool {
		return tg.status("inbox").State != api.Connected
	}, "device offline")
	code, env = tg.do("POST", "/sandbox/phones/"+bob+"/send", `{"to":"`+alice+`","message":"while away"}`)
	sent = api.SandboxSent{}
	if err := json.Unmarshal(env.Data, &sent); code != 200 || err != nil {
		t.Fatalf("send to offline device: %d %s", code, env.raw)
	}
	if !slices.Contains(sent.Offline, *dev.Jid) && !slices.Contains(sent.Delivered, *dev.Jid) {
		t.Fatalf("send to offline device: %s", env.raw)
	}
	t.Logf("while away: offline %v, delivered %v", sent.Offline, sent.Delivered)
	if ev := st.expect("message.received")[0]; ev.field("text") != "while away" {
		t.Errorf("offline message %s", ev.Data)
	}

	// The phone removes the device: device.logged_out (removed_on_phone).
	if rm, err := tg.client.SandboxRemoveDeviceWithResponse(context.Background(), alice, *dev.Jid); err != nil || rm.StatusCode() != 200 {
		t.Fatalf("remove device: %v", err)
	}
	devEvents := tg.openStream("/events?type=device.logged_out", "Last-Event-ID", strconv.FormatInt(ev.ID, 10))
	if lo := devEvents.expect("device.logged_out")[0]; lo.DeviceID != "inbox" || lo.field("reason") != "removed_on_phone" {
		t.Errorf("removal on the phone: %+v %s", lo, lo.Data)
	}

	for _, bad := range []string{`{"to":"","message":"x"}`, `{"to":"` + alice + `","message":""}`} {
		if code, env := tg.do("POST", "/sandbox/phones/"+bob+"/send", bad); code != 400 {
			t.Errorf("bad send %s: %d %s", bad, code, env.raw)
		}
	}
	if code, _ := tg.do("POST", "/sandbox/phones/"+bob+"/send", `{"to":"628999999999","message":"x"}`); code != 404 {
		t.Errorf("send to nobody: %d", code)
	}
}
