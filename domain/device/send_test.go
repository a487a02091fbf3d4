package device

import (
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

func TestSendPicksTheOnlyLoggedInDevice(t *testing.T) {
	t.Parallel()
	h := startedHarness(t)
	if _, err := h.svc.Create(t.Context(), "idle"); err != nil {
		t.Fatal(err)
	}
	c := h.link("d", jid1)

	msg, id, err := h.svc.Send(t.Context(), "", "+628111111111", "Hello")
	if err != nil {
		t.Fatal(err)
	}
	if id != "d" || msg.ID != "MSG1" || msg.Timestamp.IsZero() {
		t.Errorf("Send = %+v from %q", msg, id)
	}
	c.mu.Lock()
	sent := append([]string(nil), c.sent...)
	c.mu.Unlock()
	if len(sent) != 1 || sent[0] != "628111111111@s.whatsapp.net|Hello" {
		t.Errorf("client sent %q", sent)
	}
	// A JID works as well as a number.
	if _, _, err := h.svc.Send(t.Context(), "d", "628111111111@s.whatsapp.net", "again"); err != nil {
		t.Error(err)
	}
}

func TestSendErrors(t *testing.T) {
	t.Parallel()
	h := startedHarness(t, func(c *Config) { c.SendWait = 50 * time.Millisecond })

	_, _, err := h.svc.Send(t.Context(), "", "628111111111", "hi")
	wantCode(t, err, domain.ECONFLICT) // no device logged in

	h.link("a", jid1)
	h.link("b", "628222222222:3@s.whatsapp.net")
	if _, err := h.svc.Create(t.Context(), "idle"); err != nil {
		t.Fatal(err)
	}
	c := h.wa.last(t)

	for _, tc := range []struct {
		name, id, to, text, code string
	}{
		{"ambiguous", "", "628111111111", "hi", domain.EINVALID},
		{"unknown device", "nobody", "628111111111", "hi", domain.ENOTFOUND},
		{"bad device id", "a/b", "628111111111", "hi", domain.EINVALID},
		{"not logged in", "idle", "628111111111", "hi", domain.ECONFLICT},
		{"short phone", "a", "12345", "hi", domain.EINVALID},
		{"group", "a", "1234567890@g.us", "hi", domain.EINVALID},
		{"device jid", "a", "628111111111:2@s.whatsapp.net", "hi", domain.EINVALID},
		{"empty text", "a", "628111111111", "", domain.EINVALID},
		{"too long", "a", "628111111111", strings.Repeat("é", MaxTextLength+1), domain.EINVALID},
		{"bad utf-8", "a", "628111111111", "\xff", domain.EINVALID},
	} {
		_, _, err := h.svc.Send(t.Context(), tc.id, tc.to, tc.text)
		if got := domain.ErrorCode(err); got != tc.code {
			t.Errorf("%s: %v, want code %s", tc.name, err, tc.code)
		}
	}
	// The longest text goes through.
	if _, _, err := h.svc.Send(t.Context(), "b", "628111111111", strings.Repeat("é", MaxTextLength)); err != nil {
		t.Errorf("text of MaxTextLength characters: %v", err)
	}

	// A linked device that does not come back within SendWait is a
	// conflict too.
	c.emit(domain.Disconnected{})
	h.waitState("b", domain.StateConnecting)
	_, _, err = h.svc.Send(t.Context(), "b", "628111111111", "hi")
	wantCode(t, err, domain.ECONFLICT)
}

// A send to a device that is reconnecting waits for it instead of failing.
func TestSendWaitsForAReconnectingDevice(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		h := startedHarness(t)
		c := h.link("a", jid1)
		c.emit(domain.Disconnected{})
		h.waitState("a", domain.StateConnecting)
		sent := make(chan error, 1)
		go func() {
			_, _, err := h.svc.Send(t.Context(), "a", "628111111111", "hi")
			sent <- err
		}()
		synctest.Wait() // Send is blocked now, or it has answered
		select {
		case err := <-sent:
			t.Fatalf("Send returned while the device was still connecting: %v", err)
		default:
		}
		c.emit(domain.Connected{})
		if err := <-sent; err != nil {
			t.Fatalf("Send after the device came back: %v", err)
		}
	})
}
