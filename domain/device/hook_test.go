package device

import (
	"slices"
	"strings"
	"sync"
	"testing"
)

// Config.OnTransition hears every change of state or reason once, in
// order, with the device's identity while it has a session: what live
// events (issue 10) hang off.
func TestOnTransitionTellsEveryTransitionOnce(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var got []string
	h := startedHarness(t, func(c *Config) {
		c.OnTransition = func(tr Transition) {
			mu.Lock()
			defer mu.Unlock()
			s := tr.DeviceID + ":" + string(tr.From) + ">" + string(tr.To)
			if tr.Reason != "" {
				s += "(" + string(tr.Reason) + ")"
			}
			if tr.Identity.JID != "" {
				s += "@" + tr.Identity.JID
			}
			got = append(got, s)
		}
	})
	h.link("d", jid1)
	if _, err := h.svc.Logout(t.Context(), "d"); err != nil {
		t.Fatal(err)
	}
	h.settle("d")
	want := []string{
		"d:disconnected>pairing",
		"d:pairing>connecting@" + jid1,
		"d:connecting>connected@" + jid1,
		"d:connected>unlinking(logout)@" + jid1,
		"d:unlinking>logged_out(logout)",
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("transitions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
