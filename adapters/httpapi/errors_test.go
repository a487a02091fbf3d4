package httpapi_test

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
)

// Every domain error code has one HTTP status, in the envelope; internal
// errors show users only "internal error" and are logged in full.
func TestErrorsMapToStatusesInTheEnvelope(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err     error
		status  int
		message string
	}{
		{domain.Errorf(domain.EINVALID, "phone: too short"), 400, "phone: too short"},
		{domain.Errorf(domain.ENOTFOUND, "device d not found"), 404, "device d not found"},
		{domain.Errorf(domain.ECONFLICT, "device d is not logged in"), 409, "device d is not logged in"},
		{domain.Errorf(domain.EUNAVAILABLE, "could not reach WhatsApp"), 503, "could not reach WhatsApp"},
		{domain.Errorf(domain.ETIMEOUT, "WhatsApp did not answer"), 504, "WhatsApp did not answer"},
		{domain.Wrap(domain.EINTERNAL, errors.New("disk on fire"), "save"), 500, "internal error"},
		{fmt.Errorf("wrapped: %w", errors.New("a bare error")), 500, "internal error"},
	} {
		t.Run(tc.message, func(t *testing.T) {
			var logs bytes.Buffer
			h := httpapi.NewHandler(httpapi.Config{
				Devices: oneDevice{err: tc.err},
				Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
				Ready:   func() bool { return true },
			})
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest("GET", "/devices/d/status", nil))
			want := fmt.Sprintf(`{"code":%d,"message":%q,"data":null}`, tc.status, tc.message)
			if w.Code != tc.status || w.Body.String() != want {
				t.Errorf("got %d %s, want %d %s", w.Code, w.Body, tc.status, want)
			}
			if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("content type %q", ct)
			}
			logged := strings.Contains(logs.String(), `"level":"ERROR"`)
			if logged != (tc.status >= 500) {
				t.Errorf("error logged: %v, for status %d:\n%s", logged, tc.status, logs.String())
			}
		})
	}
}

func TestRoutingErrorsAndPanicsAreEnvelopes(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	h := httpapi.NewHandler(httpapi.Config{
		Devices: oneDevice{},
		Logger:  slog.New(slog.NewJSONHandler(&logs, nil)),
		Ready:   func() bool { return true },
		Metrics: middleware.NewMetrics(nil),
	})
	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/no/such/thing", http.StatusNotFound},
		{"PUT", "/devices", http.StatusMethodNotAllowed},
		{"GET", "/devices/panic/status", http.StatusInternalServerError},
		{"GET", "/sandbox/connections", http.StatusNotFound}, // not the sandbox
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(tc.method, tc.path, nil))
		if w.Code != tc.status || !strings.HasPrefix(w.Body.String(), fmt.Sprintf(`{"code":%d,"message":`, tc.status)) {
			t.Errorf("%s %s: %d %s, want %d in the envelope", tc.method, tc.path, w.Code, w.Body, tc.status)
		}
	}
	if !strings.Contains(logs.String(), "a handler bug") {
		t.Errorf("the panic was not logged:\n%s", logs.String())
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	panicked := `gowa_http_requests_total{method="GET",route="/devices/{device_id}/status",status="500"} 1`
	if !strings.Contains(w.Body.String(), panicked) {
		t.Errorf("the panicked request is not counted as a 500:\n%s", w.Body)
	}
}
