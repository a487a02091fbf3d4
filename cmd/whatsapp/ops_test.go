package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func withAuthFile(path string) gatewayOption {
	return func(c *Config) { c.BasicAuthFile = path }
}

func withProxies(list string) gatewayOption {
	return func(c *Config) { c.TrustedProxies = list }
}

// get sends GET path as user:pass ("" for none) and returns the status.
func (tg *testGateway) get(path, user, pass string, hdr ...string) int {
	tg.t.Helper()
	req, _ := http.NewRequest("GET", tg.url+path, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tg.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestCredentialRotationBySIGHUPAndFileChange(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "credentials")
	if err := os.WriteFile(file, []byte("# rotated by ops\nold:pass-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tg := startGateway(t, filepath.Join(dir, "storages"), withAuthFile(file))
	if got := tg.get("/devices", "old", "pass-1"); got != 200 {
		t.Fatalf("old credentials before rotation: %d", got)
	}

	// Rotation by SIGHUP. The file's size and time stay plausible for a
	// watcher, so write, then signal at once.
	if err := os.WriteFile(file, []byte("new:pass-2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() bool { return tg.get("/devices", "new", "pass-2") == 200 }, "new credentials live")
	if got := tg.get("/devices", "old", "pass-1"); got != 401 {
		t.Fatalf("old credentials after rotation: %d", got)
	}

	// A bad file keeps the previous set.
	if err := os.WriteFile(file, []byte("no colon here\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGHUP)
	eventually(t, 10*time.Second, func() bool { return strings.Contains(tg.logs.String(), "keeping the previous") }, "bad file logged")
	if got := tg.get("/devices", "new", "pass-2"); got != 200 {
		t.Fatalf("credentials after a bad file: %d", got)
	}

	// Rotation by file change alone.
	if err := os.WriteFile(file, []byte("third:pass-3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Wait for the watcher's log line rather than polling with the new
	// credentials: every failed try counts towards the login throttle.
	eventually(t, 15*time.Second, func() bool {
		return strings.Contains(tg.logs.String(), "credentials reloaded after the file changed")
	}, "file change picked up")
	if got := tg.get("/devices", "third", "pass-3"); got != 200 {
		t.Fatalf("credentials from the changed file: %d", got)
	}
	if got := tg.get("/devices", "new", "pass-2"); got != 401 {
		t.Fatalf("replaced credentials still work: %d", got)
	}
	checkNoSecrets(t, tg.logs.String(), "pass-1", "pass-2", "pass-3")
}

func TestFailedLoginsAreThrottledPerClient(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir(), withAuth("admin:secret123"), withProxies("127.0.0.1"))
	// Through the trusted proxy (the test itself), two clients.
	for i := 0; i < 10; i++ {
		if got := tg.get("/devices", "admin", "wrong", "X-Forwarded-For", "203.0.113.7"); got != 401 {
			t.Fatalf("failure %d: %d", i, got)
		}
	}
	req, _ := http.NewRequest("GET", tg.url+"/devices", nil)
	req.SetBasicAuth("admin", "secret123")
	req.Header.Set("X-Forwarded-For", "203.0.113.7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("11th attempt: %d Retry-After=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	var env envelopeBody
	if json.Unmarshal(raw, &env) != nil || env.Code != 429 {
		t.Fatalf("429 without the envelope: %s", raw)
	}
	if got := tg.get("/devices", "admin", "secret123", "X-Forwarded-For", "198.51.100.9"); got != 200 {
		t.Fatalf("another client was throttled too: %d", got)
	}
	if got := tg.get("/health", "", ""); got != 200 {
		t.Fatalf("health while throttled: %d", got)
	}
}

func TestAccessLogAndMetrics(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir(), withAuth("admin:secret123"), withProxies("127.0.0.0/8"))
	if got := tg.get("/devices/acc-dev?token=hidden", "admin", "secret123", "X-Forwarded-For", "192.0.2.1, 10.9.9.9"); got != 404 {
		t.Fatalf("status: %d", got)
	}
	var line map[string]any
	eventually(t, 5*time.Second, func() bool {
		sc := bufio.NewScanner(strings.NewReader(tg.logs.String()))
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil && m["path"] == "/devices/acc-dev" {
				line = m
				return true
			}
		}
		return false
	}, "access log line")
	for _, k := range []string{"method", "path", "status", "duration_ms", "client_ip", "device_id"} {
		if _, ok := line[k]; !ok {
			t.Errorf("access log lacks %s: %v", k, line)
		}
	}
	// 10.9.9.9 is not trusted, so it is the client.
	if line["client_ip"] != "10.9.9.9" || line["device_id"] != "acc-dev" {
		t.Errorf("client_ip %v device_id %v", line["client_ip"], line["device_id"])
	}
	if logs := tg.logs.String(); strings.Contains(logs, "hidden") || strings.Contains(logs, "secret123") {
		t.Error("the query string or a password reached the logs")
	}

	if got := tg.get("/metrics", "", ""); got != 401 {
		t.Fatalf("/metrics without credentials: %d", got)
	}
	req, _ := http.NewRequest("GET", tg.url+"/metrics", nil)
	req.SetBasicAuth("admin", "secret123")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"gowa_http_requests_total", "gowa_devices"} {
		if !strings.Contains(string(raw), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestGracefulShutdownUnderLoad(t *testing.T) {
	t.Parallel()
	// A device linked to Alice's phone (the shared linked folder: this
	// test is not about pairing).
	dir, _ := linkedCopy(t)
	tg := startGateway(t, dir)
	tg.waitState("dev", "connected")

	var okCount, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(tg.url + "/devices/dev/status")
				if err != nil {
					// Refused after the listener closed: never accepted.
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					okCount.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	eventually(t, 10*time.Second, func() bool { return okCount.Load() > 200 }, "load running")
	tg.stop()
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d accepted requests failed during shutdown", failed.Load())
	}
	tg = startGateway(t, dir)
	tg.waitState("dev", "connected")
	t.Logf("%s requests answered during the run", strconv.FormatInt(okCount.Load(), 10))
}
