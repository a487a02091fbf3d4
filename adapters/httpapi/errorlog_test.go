package httpapi_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/domain"
)

// The ERROR line of a failed request carries its request id, the code once
// and the chain of messages without each domain error's code prefix.
func TestRequestFailedLogLine(t *testing.T) {
	t.Parallel()
	cause := domain.Wrap(domain.EUNAVAILABLE, errors.New("dial tcp: connection refused"), "could not reach WhatsApp")
	var logs bytes.Buffer
	h := httpapi.NewHandler(httpapi.Config{
		Devices: oneDevice{err: domain.Wrap(domain.EUNAVAILABLE, cause, "WhatsApp did not confirm the logout; the session is kept")},
		Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/devices/d/status", nil))
	if w.Code != 503 {
		t.Fatalf("status %d", w.Code)
	}
	var line struct {
		Msg, RequestID, Code, Err string
	}
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var raw map[string]any
		if err := json.Unmarshal([]byte(l), &raw); err != nil {
			t.Fatal(err)
		}
		if raw["msg"] == "request failed" {
			line.Msg, _ = raw["msg"].(string)
			line.RequestID, _ = raw["request_id"].(string)
			line.Code, _ = raw["code"].(string)
			line.Err, _ = raw["err"].(string)
		}
	}
	if line.Msg == "" {
		t.Fatalf("no request failed line:\n%s", logs.String())
	}
	if line.RequestID == "" || line.RequestID != w.Header().Get("X-Request-Id") {
		t.Errorf("request_id %q, answered X-Request-Id %q", line.RequestID, w.Header().Get("X-Request-Id"))
	}
	want := "WhatsApp did not confirm the logout; the session is kept: could not reach WhatsApp: dial tcp: connection refused"
	if line.Code != domain.EUNAVAILABLE || line.Err != want {
		t.Errorf("code %q err %q, want %q %q", line.Code, line.Err, domain.EUNAVAILABLE, want)
	}
}
