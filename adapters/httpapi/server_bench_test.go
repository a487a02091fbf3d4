package httpapi_test

import (
	"bufio"
	"context"
	"crypto/subtle"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
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
		Devices:   oneDevice{st: st},
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil)),
		AccessLog: io.Discard,
		Ready:     func() bool { return true },
		Auth:      auth,
		Throttle:  middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:   middleware.NewMetrics(func() map[string]int { return nil }),
		Sites:     middleware.NewSiteGuard(nil, true),
	})
	req := httptest.NewRequest("GET", "/devices/d1/status", nil)
	req.SetBasicAuth("bench", "secret")
	req.RemoteAddr = "127.0.0.1:40000"
	req.Host = "127.0.0.1:3000"
	benchHandler(b, h, req)
}

// BenchmarkStatusFloor is the floor BenchmarkStatus compares with: a bare
// handler checking the same credentials and writing the same bytes.
func BenchmarkStatusFloor(b *testing.B) {
	body := []byte(`{"code":200,"data":{"connected":true,"created_at":"2026-12-01T10:00:00.123456789Z","device_id":"d1","jid":"628123456789:1@s.whatsapp.net","last_error":null,"logged_in":true,"pairing":null,"phone":"628123456789","platform":"android","push_name":"Alice","sandbox":false,"state":"connected","state_since":"2026-12-01T10:00:00.123456789Z"},"message":"OK"}` + "\n")
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		uOK := subtle.ConstantTimeCompare([]byte(u), []byte("bench"))
		pOK := subtle.ConstantTimeCompare([]byte(p), []byte("secret"))
		w.Header().Set("Content-Type", "application/json")
		if !ok || uOK&pOK != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	})
	req := httptest.NewRequest("GET", "/devices/d1/status", nil)
	req.SetBasicAuth("bench", "secret")
	benchHandler(b, h, req)
}

// benchHandler serves req over and over to a ResponseWriter that keeps
// nothing, so that only the handler is measured.
func benchHandler(b *testing.B, h http.Handler, req *http.Request) {
	w := &discardWriter{header: http.Header{}}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		clear(w.header)
		w.status = 0
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK && w.status != 0 {
			b.Fatalf("status %d", w.status)
		}
	}
	// CPU time per request, which a busy machine disturbs less than
	// ns/op (wall time), GC included.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type discardWriter struct {
	header http.Header
	status int
}

func (w *discardWriter) Header() http.Header { return w.header }
func (w *discardWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkStatusTCP serves BenchmarkStatus's stack as the gateway serves
// it (NewServer's limits, on Listener) over loopback, to keep-alive
// clients in this process; BenchmarkStatusTCPFloor serves the floor on a
// bare http.Server. Their CPU profiles show what the gateway pays beyond
// its handler: connection deadlines, the listener's wrapper, the logs.
func BenchmarkStatusTCP(b *testing.B) {
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
		Devices:   oneDevice{st: st},
		Logger:    slog.New(slog.NewJSONHandler(io.Discard, nil)),
		AccessLog: io.Discard,
		Auth:      auth,
		Throttle:  middleware.NewThrottle(10, time.Minute, time.Now),
		Metrics:   middleware.NewMetrics(func() map[string]int { return nil }),
		Sites:     middleware.NewSiteGuard(nil, true),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := httpapi.NewServer(h, httpapi.Limits{}, nil)
	go func() { _ = srv.Serve(httpapi.Listener(ln)) }()
	defer srv.Close()
	benchTCP(b, ln.Addr().String())
}

func BenchmarkStatusTCPFloor(b *testing.B) {
	body := []byte(`{"code":200,"data":{"connected":true,"created_at":"2026-12-01T10:00:00.123456789Z","device_id":"d1","jid":"628123456789:1@s.whatsapp.net","last_error":null,"logged_in":true,"pairing":null,"phone":"628123456789","platform":"android","push_name":"Alice","sandbox":false,"state":"connected","state_since":"2026-12-01T10:00:00.123456789Z"},"message":"OK"}` + "\n")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		uOK := subtle.ConstantTimeCompare([]byte(u), []byte("bench"))
		pOK := subtle.ConstantTimeCompare([]byte(p), []byte("secret"))
		w.Header().Set("Content-Type", "application/json")
		if !ok || uOK&pOK != 1 {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write(body)
	})}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	benchTCP(b, ln.Addr().String())
}

// benchTCP sends GET /devices/d1/status with Basic auth over 16 keep-alive
// connections and reads the answers.
func benchTCP(b *testing.B, addr string) {
	req := "GET /devices/d1/status HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Basic YmVuY2g6c2VjcmV0\r\nUser-Agent: Go-http-client/1.1\r\n\r\n"
	b.ReportAllocs()
	b.SetParallelism(8)
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for pb.Next() {
			if _, err := io.WriteString(c, req); err != nil {
				b.Error(err)
				return
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}
