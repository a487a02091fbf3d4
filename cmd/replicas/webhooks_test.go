package replicas_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/webhook"
)

// hookReceiver is a device webhook's receiver on loopback: it checks each
// delivery's signature and counts deliveries by event id, so that a
// delivery made twice (two replicas sending at once, or a handover that
// did not wait for the one in flight) shows.
type hookReceiver struct {
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	byID   map[int64]int
	order  []int64
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	h := &hookReceiver{secret: secret, byID: map[int64]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := webhook.Verify(h.secret, r.Header.Get("X-Gowa-Signature"), body, time.Now(), 5*time.Minute); err != nil {
			t.Errorf("a delivery does not verify: %v", err)
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		var ev struct {
			ID int64 `json:"id"`
		}
		if err := json.Unmarshal(body, &ev); err != nil || ev.ID == 0 {
			t.Errorf("a delivery that is not an event: %q", body)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.byID[ev.ID]++
		h.order = append(h.order, ev.ID)
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// events returns how many events were delivered, and the ids delivered
// more than once.
func (h *hookReceiver) events() (int, []int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var twice []int64
	for id, n := range h.byID {
		if n > 1 {
			twice = append(twice, id)
		}
	}
	return len(h.byID), twice
}

// waitDelivered waits until n events were delivered and the outbox is
// empty (every delivery recorded as made, so that no replica that takes
// the webhooks over has any to make again).
func (c *cluster) waitDelivered(h *hookReceiver, n int, within time.Duration, what string) {
	c.t.Helper()
	eventually(c.t, within, func() bool {
		got, _ := h.events()
		return got >= n && len(c.query(`SELECT 1 FROM gowa_outbox LIMIT 1`)) == 0
	}, what)
}
