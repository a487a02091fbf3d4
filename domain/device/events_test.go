package device

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/gowa-dev/gowa/domain"
)

// recorder is a ports.Events that keeps what it is told.
type recorder struct {
	mu     sync.Mutex
	evs    []string // "device type reason-or-detail"
	raw    []string
	synced int // events emitted at the last Sync
}

func (r *recorder) Emit(deviceID string, typ domain.EventType, data any) {
	b, _ := json.Marshal(data)
	line := deviceID + " " + string(typ)
	if rd, ok := data.(domain.ReasonEventData); ok {
		line += " " + string(rd.Reason)
	}
	r.mu.Lock()
	r.evs = append(r.evs, line)
	r.raw = append(r.raw, string(b))
	r.mu.Unlock()
}

// Sync records how many events had been emitted when it was called.
func (r *recorder) Sync(ctx context.Context) error {
	r.mu.Lock()
	r.synced = len(r.evs)
	r.mu.Unlock()
	return nil
}

func (r *recorder) syncedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.evs...)
}

func (r *recorder) waitFor(t *testing.T, want ...string) {
	t.Helper()
	eventually(t, fmt.Sprintf("events %q", want), func() bool {
		got := strings.Join(r.lines(), "\n")
		return strings.HasSuffix(got, strings.Join(want, "\n"))
	})
}

func TestDeviceTransitionsEmitEvents(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := startedHarness(t, func(c *Config) { c.Events = rec })

	c := h.link("d", "628111:1@s.whatsapp.net")
	rec.waitFor(t, "d device.created", "d device.pairing", "d device.connected")
	rec.mu.Lock()
	pairing, connected := rec.raw[1], rec.raw[2]
	rec.mu.Unlock()
	if !strings.Contains(pairing, `"method":"qr"`) || strings.Contains(pairing, "#1") {
		t.Errorf("device.pairing data %s: want the method and no QR text", pairing)
	}
	if !strings.Contains(connected, `"jid":"628111:1@s.whatsapp.net"`) || !strings.Contains(connected, `"phone":"628111"`) {
		t.Errorf("device.connected data %s", connected)
	}

	c.emit(domain.Disconnected{})
	rec.waitFor(t, "d device.disconnected connection_lost")
	c.emit(domain.Connected{})
	rec.waitFor(t, "d device.connected")

	acked := make(chan int, 1)
	c.emit(domain.IncomingMessage{
		Message: domain.MessageEventData{ID: "M1", Chat: "628222@s.whatsapp.net", Type: "text", Text: "hi"},
		Done:    func() { acked <- rec.syncedCount() },
	})
	rec.waitFor(t, "d device.connected", "d message.received")
	// The adapter may acknowledge the message only once its event is
	// synced to the log.
	if n := <-acked; n != len(rec.lines()) {
		t.Errorf("message acknowledged with %d of %d events synced", n, len(rec.lines()))
	}
	if _, _, err := h.svc.Send(t.Context(), "d", "628222333444", "hello"); err != nil {
		t.Fatal(err)
	}
	if n := rec.syncedCount(); n != len(rec.lines()) {
		t.Errorf("Send answered with %d of %d events synced", n, len(rec.lines()))
	}
	rec.waitFor(t, "d message.received", "d message.sent")

	if _, err := h.svc.Logout(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "d device.logged_out logout")

	c2 := h.link("e", "628333:2@s.whatsapp.net")
	c2.emit(domain.LoggedOut{Reason: domain.ReasonRemovedOnPhone, Detail: "device removed"})
	rec.waitFor(t, "e device.logged_out removed_on_phone")

	if _, err := h.svc.Delete(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "d device.deleted")
}

func TestPairingEndsEmitDisconnectedWithReason(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := startedHarness(t, func(c *Config) { c.Events = rec })
	if _, err := h.svc.LoginQR(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	h.wa.last(t).emit(domain.PairingExpired{})
	rec.waitFor(t, "p device.disconnected pairing_expired")
	if _, err := h.svc.LoginQR(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Logout(t.Context(), "p"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "p device.pairing", "p device.disconnected pairing_cancelled")
}

// A reconnect asked through the API is a disconnection without a reason
// (null, as the device's status has it); deleting a linked device ends its
// session first, then the slot.
func TestReconnectAndDeleteEmitOnce(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	h := startedHarness(t, func(c *Config) { c.Events = rec })
	h.link("r", "628444:3@s.whatsapp.net")
	rec.waitFor(t, "r device.created", "r device.pairing", "r device.connected")

	if _, err := h.svc.Reconnect(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	rec.waitFor(t, "r device.disconnected ")
	// The disconnection's own payload: other events may follow it at once.
	rec.mu.Lock()
	var got string
	for i, ev := range rec.evs {
		if ev == "r device.disconnected " {
			got = rec.raw[i]
		}
	}
	rec.mu.Unlock()
	if got != `{"reason":null}` {
		t.Errorf("device.disconnected of a reconnect: %s, want a null reason", got)
	}
	h.wa.last(t).emit(domain.Connected{})
	rec.waitFor(t, "r device.disconnected ", "r device.connected")

	if _, err := h.svc.Delete(t.Context(), "r"); err != nil {
		t.Fatal(err)
	}
	if n := rec.syncedCount(); n != len(rec.lines()) {
		t.Errorf("Delete answered with %d of %d events synced", n, len(rec.lines()))
	}
	rec.waitFor(t, "r device.connected", "r device.logged_out logout", "r device.deleted")
	got = strings.Join(rec.lines(), "\n")
	if strings.Count(got, "device.connected") != 2 || strings.Count(got, "device.logged_out") != 1 {
		t.Errorf("events told more than once:\n%s", got)
	}
}
