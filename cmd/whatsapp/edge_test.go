package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/api"
)

func withAllowedHosts(list string) gatewayOption {
	return func(c *Config) { c.AllowedHosts = list }
}

// TestCrossSiteRequestsSendNothing: what a page of another site can make a
// browser send (a cross-site JSON POST, a text/plain form, a request under
// a rebound host name) is refused, and the phone receives nothing; a
// same-origin page and curl keep working.
func TestCrossSiteRequestsSendNothing(t *testing.T) {
	t.Parallel()
	const victim = "dev"
	// The victim is a device linked to Alice's phone (the shared linked
	// folder: this test is not about pairing).
	dir, _ := linkedCopy(t)
	tg := startGateway(t, dir, withAllowedHosts("gowa.example.com"))
	tg.createPhone(bob, "Bob")
	tg.waitState(victim, api.Connected)
	send := `{"phone":"` + bob + `","message":"from a web page"}`
	port := tg.url[strings.LastIndex(tg.url, ":")+1:]

	for _, c := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"cross-site fetch", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403},
		{"same-site fetch", []string{"Sec-Fetch-Site", "same-site", "Origin", "http://other.localhost:" + port}, 403},
		{"foreign Origin from an old browser", []string{"Origin", "https://evil.example"}, 403},
		{"text/plain form", []string{"Content-Type", "text/plain"}, 415},
		{"rebound host name", []string{"Host", "evil.example:" + port}, 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, env := tg.do("POST", "/send/message", send, append([]string{"X-Device-Id", victim}, c.hdr...)...)
			if code != c.want || env.Code != c.want {
				t.Errorf("%d %s, want %d", code, env.raw, c.want)
			}
		})
	}
	// A cross-site login would create a slot and open a pairing; a
	// cross-site logout would unlink the phone.
	if code, _ := tg.do("GET", "/devices/planted/login", "", "Sec-Fetch-Site", "cross-site"); code != 403 {
		t.Errorf("cross-site login: %d", code)
	}
	if code, _ := tg.do("GET", "/devices/planted", ""); code != 404 {
		t.Errorf("a cross-site login created the slot: %d", code)
	}
	if code, _ := tg.do("POST", "/devices/"+victim+"/logout", "", "Origin", "https://evil.example"); code != 403 {
		t.Errorf("cross-site logout: %d", code)
	}
	if d := tg.status(victim); !d.LoggedIn {
		t.Error("a cross-site logout logged the device out")
	}
	msgs, err := tg.client.SandboxListMessagesWithResponse(context.Background(), bob)
	if err != nil || msgs.JSON200 == nil {
		t.Fatalf("inbox: %v", err)
	}
	if n := len(msgs.JSON200.Data); n != 0 {
		t.Fatalf("refused requests sent %d messages: %+v", n, msgs.JSON200.Data)
	}

	// Same-origin pages, listed names and curl get through.
	for _, hdr := range [][]string{
		{"Sec-Fetch-Site", "same-origin", "Origin", tg.url},
		{"Host", "localhost:" + port},
		{"Host", "gowa.example.com", "Origin", "https://gowa.example.com"},
		nil,
	} {
		if code, env := tg.do("POST", "/send/message", send, append([]string{"X-Device-Id", victim}, hdr...)...); code != 200 {
			t.Errorf("send with %v: %d %s", hdr, code, env.raw)
		}
	}
	msgs, _ = tg.client.SandboxListMessagesWithResponse(context.Background(), bob)
	if msgs.JSON200 == nil || len(msgs.JSON200.Data) != 4 {
		t.Fatalf("allowed sends did not all arrive: %s", msgs.Body)
	}
}

// TestStalledClientDoesNotHoldShutdown: a client that announced a body
// and sends none is cut when the grace ends, even with a read timeout far
// beyond it, and the gateway stops.
func TestStalledClientDoesNotHoldShutdown(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir(), func(c *Config) {
		c.ShutdownGrace = 200 * time.Millisecond
		c.BodyTimeout = time.Hour
	})
	c, err := net.Dial("tcp", strings.TrimPrefix(tg.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "POST /send/message HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n")
	// The request is in: its headers were read once /health answers on
	// another connection after it... and the stalled one is still open.
	resp, err := http.Get(tg.url + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	tg.stop() // fails the test if Run does not return
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Errorf("the stalled connection was not closed at shutdown: %v", err)
	}
}
