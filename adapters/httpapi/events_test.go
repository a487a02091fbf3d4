package httpapi_test

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/events"
)

// streamServer serves the HTTP adapter over a real event hub on a real
// listener whose server has a short write timeout, as a hardened server
// would.
func streamServer(t *testing.T, buffer int) (*events.Hub, string) {
	t.Helper()
	store, err := sqlite.OpenEvents(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	hub := events.New(events.Config{Store: store, SubscriberBuffer: buffer})
	if err := hub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h := httpapi.NewHandler(httpapi.Config{Events: hub, Heartbeat: 50 * time.Millisecond})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadTimeout: 300 * time.Millisecond, WriteTimeout: 300 * time.Millisecond}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		hub.CloseStreams()
		_ = srv.Close()
		_ = hub.Close()
		_ = store.Close()
	})
	return hub, "http://" + ln.Addr().String()
}

func TestStreamOutlivesTheServerWriteTimeoutWithHeartbeats(t *testing.T) {
	hub, url := streamServer(t, 64)
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("headers %v", resp.Header)
	}
	r := bufio.NewReader(resp.Body)
	// Past the server's 300 ms write timeout, heartbeats still arrive.
	deadline := time.Now().Add(600 * time.Millisecond)
	beats := 0
	for time.Now().Before(deadline) {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended after %d heartbeats: %v", beats, err)
		}
		if line == ": heartbeat\n" {
			beats++
		}
	}
	hub.Emit("d", domain.EventDeviceCreated, nil)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("no event after the write timeout: %v", err)
		}
		if strings.HasPrefix(line, "event: device.created") {
			break
		}
	}
}

func TestSlowReaderIsCutOff(t *testing.T) {
	hub, url := streamServer(t, 2)
	resp, err := http.Get(url + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := bufio.NewReader(resp.Body)
	if line, _ := r.ReadString('\n'); line != "retry: 2000\n" {
		t.Fatalf("first line %q", line)
	}
	// Far more than the buffer and the socket hold, while this reader
	// reads nothing.
	big := strings.Repeat("x", 8<<10)
	for range 2000 {
		hub.Emit("d", domain.EventMessageReceived, domain.MessageEventData{Text: big})
	}
	body, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if !strings.Contains(string(body), ": cut off") {
		t.Fatalf("the slow reader was not cut off (%d bytes read)", len(body))
	}
	if n := strings.Count(string(body), "event: message.received"); n >= 2000 {
		t.Fatalf("got all %d events; expected a cut-off", n)
	}
}
