package httpapi_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
)

// oneDevice is a Devices with one connected device, for testing the HTTP
// layer alone. Get answers err when it is set, and panics when id is
// "panic".
type oneDevice struct {
	st  domain.Status
	err error
}

func (d oneDevice) List(context.Context) []domain.Status { return []domain.Status{d.st} }
func (d oneDevice) Get(_ context.Context, id string) (domain.Status, error) {
	if id == "panic" {
		panic("a handler bug")
	}
	if d.err != nil {
		return domain.Status{}, d.err
	}
	if id != d.st.DeviceID {
		return domain.Status{}, domain.Errorf(domain.ENOTFOUND, "device %s not found", id)
	}
	return d.st, nil
}
func (d oneDevice) Create(context.Context, string) (domain.Status, error) { return d.st, nil }
func (d oneDevice) Delete(context.Context, string) (string, error)        { return "", nil }
func (d oneDevice) LoginQR(context.Context, string) (device.QR, error)    { return device.QR{}, nil }
func (d oneDevice) LoginCode(context.Context, string, string) (device.PairingCode, error) {
	return device.PairingCode{}, nil
}
func (d oneDevice) Logout(context.Context, string) (domain.Status, error)    { return d.st, nil }
func (d oneDevice) Reconnect(context.Context, string) (domain.Status, error) { return d.st, nil }
func (d oneDevice) Send(context.Context, string, string, string) (domain.SentMessage, string, error) {
	return domain.SentMessage{}, "", nil
}

// BenchmarkStatus is the gateway's whole HTTP stack (request id, client IP,
// access log, recoverer, metrics, body limit, throttle, basic auth, routing,
// the strict handler and the envelope) answering an authenticated
// GET /devices/{id}/status. `make bench` measures the same over real
// sockets against a bare handler; this one shows where the time goes.
func BenchmarkStatus(b *testing.B) {
	creds, err := middleware.ParseCredentials("bench:secret")
	if err != nil {
		b.Fatal(err)
	}
	auth, err := middleware.NewAuth(creds, "", nil)
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	st := domain.Status{DeviceID: "d1", State: domain.StateConnected, Since: now, CreatedAt: now, LoggedIn: true, Connected: true,
		Identity: domain.Identity{JID: "628123456789:1@s.whatsapp.net", Phone: "628123456789", PushName: "Alice", Platform: "android"}}
	h := httpapi.NewHandler(httpapi.Config{
		Devices:  oneDevice{st: st},
		Logger:   slog.New(slog.NewJSONHandler(io.Discard, nil)),
		Ready:    func() bool { return true },
		Auth:     auth,
		Throttle: middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:  middleware.NewMetrics(func() map[string]int { return nil }),
	})
	req := httptest.NewRequest("GET", "/devices/d1/status", nil)
	req.SetBasicAuth("bench", "secret")
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
}
