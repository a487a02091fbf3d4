package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// TestStandaloneSimulator runs the real binary three times: one `whatsapp
// simulator` and two `whatsapp sandbox --simulator …` gateways on their own
// storage folders. Each gateway links a device through the shared
// simulator's phones (one by QR, one by pairing code), they message each
// other, one gateway restarts and its device comes back, and the simulator
// shows that no device ever had two connections at once.
func TestStandaloneSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	tmp := t.TempDir()
	bin, err := proc.Build(context.Background(), tmp)
	if err != nil {
		t.Fatal(err)
	}
	start := func(name string, o proc.Options) *proc.Gateway {
		t.Helper()
		o.Bin = bin
		o.LogPath = filepath.Join(tmp, name+".log")
		g, err := proc.Start(o)
		if err != nil {
			t.Fatalf("start %s: %v", name, err)
		}
		t.Cleanup(g.Kill)
		if _, err := g.WaitHealthy(60 * time.Second); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return g
	}
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"simulator", "a", "b"} {
				raw, _ := os.ReadFile(filepath.Join(tmp, name+".log"))
				lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
				t.Logf("%s log (last lines):\n%s", name, strings.Join(lines[max(0, len(lines)-30):], "\n"))
			}
		}
	})
	sim := start("simulator", proc.Options{Simulator: true, Storages: filepath.Join(tmp, "sim")})
	simURL := sim.URL
	attach := []string{"--simulator", simURL}
	a := start("a", proc.Options{Storages: filepath.Join(tmp, "a"), Auth: "admin:secret-a", Args: attach})
	b := start("b", proc.Options{Storages: filepath.Join(tmp, "b"), Args: attach})

	// The simulator serves the sandbox API and nothing of the gateway's.
	if code, _, err := sim.Do("GET", "/devices", nil); err != nil || code != 404 {
		t.Fatalf("GET /devices on the simulator: %d, %v", code, err)
	}
	// From here every call, to the gateways and to the simulator, goes
	// through a proxy that holds it to openapi.yaml.
	for _, g := range []*proc.Gateway{sim, a, b} {
		g.URL = contractProxy(t, g.URL)
	}
	// Phones made through a gateway's /sandbox API live in the simulator.
	if err := a.CreatePhone(alice, "Alice"); err != nil {
		t.Fatal(err)
	}
	if err := sim.CreatePhone(bob, "Bob"); err != nil {
		t.Fatal(err)
	}
	var bobDevices []api.SandboxDevice
	if err := a.Call("GET", "/sandbox/phones/"+bob+"/devices", nil, &bobDevices); err != nil || len(bobDevices) != 0 {
		t.Fatalf("Bob's devices through gateway a: %+v, %v", bobDevices, err)
	}
	// An error of the simulator's comes back through the gateway as it was.
	if code, env, err := a.Do("GET", "/sandbox/phones/628999999999/devices", nil); err != nil || code != 404 || !strings.Contains(env.Message, "628999999999") {
		t.Fatalf("unknown phone through gateway a: %d %q, %v", code, env.Message, err)
	}

	// a links by QR, scanned through its own /sandbox API.
	jidA, err := a.LinkQR("dev-a", alice)
	if err != nil {
		t.Fatal(err)
	}
	// b links by pairing code, entered on Bob's phone at the simulator.
	var code api.LoginCode
	if err := b.Call("POST", "/devices/dev-b/login/code", map[string]string{"phone": bob}, &code); err != nil {
		t.Fatal(err)
	}
	var link api.SandboxLink
	if err := sim.Call("POST", "/sandbox/phones/"+bob+"/link-code", map[string]string{"code": code.Code}, &link); err != nil {
		t.Fatal(err)
	}
	devB, err := b.WaitState("dev-b", api.Connected, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if devB.Jid == nil || *devB.Jid != link.Jid || !devB.Sandbox {
		t.Fatalf("dev-b is %+v, Bob's phone linked %s", devB, link.Jid)
	}
	jidB := link.Jid

	// a's device messages Bob; his phone has it, whichever API is asked.
	id, err := a.Send("dev-a", bob, "Hello Bob")
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []*proc.Gateway{sim, b} {
		var inbox []api.SandboxMessage
		if err := g.Call("GET", "/sandbox/phones/"+bob+"/messages", nil, &inbox); err != nil {
			t.Fatal(err)
		}
		if !hasMessage(inbox, id, "Hello Bob", false) {
			t.Fatalf("Bob's inbox at %s lacks the message: %+v", g.URL, inbox)
		}
	}

	// b restarts; its device comes back without a scan, and sends.
	if code, err := b.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop b: exit %d, %v", code, err)
	}
	b = start("b", proc.Options{Storages: filepath.Join(tmp, "b"), Args: attach})
	b.URL = contractProxy(t, b.URL)
	devB, err = b.WaitState("dev-b", api.Connected, 60*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if *devB.Jid != jidB {
		t.Fatalf("dev-b restored as %s, was %s", *devB.Jid, jidB)
	}
	id, err = b.Send("dev-b", alice, "Hello Alice, I am back")
	if err != nil {
		t.Fatal(err)
	}
	var aliceInbox []api.SandboxMessage
	if err := sim.Call("GET", "/sandbox/phones/"+alice+"/messages", nil, &aliceInbox); err != nil || !hasMessage(aliceInbox, id, "Hello Alice, I am back", false) {
		t.Fatalf("Alice's inbox %+v, %v", aliceInbox, err)
	}

	// One connection each now, and never two at once: through the
	// restart too.
	for _, g := range []*proc.Gateway{sim, a} {
		conns, err := g.Connections()
		if err != nil {
			t.Fatal(err)
		}
		for _, jid := range []string{jidA, jidB} {
			if conns.ByDevice[jid] != 1 || conns.MaxByDevice[jid] != 1 {
				t.Errorf("%s: device %s has %d connections, at most %d at once; want 1 and 1", g.URL, jid, conns.ByDevice[jid], conns.MaxByDevice[jid])
			}
		}
		if conns.LoggedIn != 2 {
			t.Errorf("%s: %d logged-in connections, want 2", g.URL, conns.LoggedIn)
		}
	}
	var root api.SandboxCertificateRoot
	if err := a.Call("GET", "/sandbox/certificate-root", nil, &root); err != nil || len(root.PublicKey) != 32 {
		t.Fatalf("certificate root through gateway a: %d bytes, %v", len(root.PublicKey), err)
	}

	// The simulator restarts on its port under the running gateways: it
	// keeps its world and its certificate root, and both devices come back.
	_, port, _ := strings.Cut(strings.TrimPrefix(simURL, "http://"), ":")
	if code, err := sim.Stop(30 * time.Second); err != nil || code != 0 {
		t.Fatalf("stop the simulator: exit %d, %v", code, err)
	}
	sim = start("simulator", proc.Options{Simulator: true, Storages: filepath.Join(tmp, "sim"), Args: []string{"--port", port}})
	if sim.URL != simURL {
		t.Fatalf("the simulator came back on %s, not %s", sim.URL, simURL)
	}
	sim.URL = contractProxy(t, sim.URL)
	eventually(t, 60*time.Second, func() bool {
		conns, err := sim.Connections()
		return err == nil && conns.ByDevice[jidA] == 1 && conns.ByDevice[jidB] == 1
	}, "both devices connected to the restarted simulator")
	if _, err := a.Send("dev-a", bob, "Still here"); err != nil {
		t.Fatal(err)
	}
	for _, g := range []*proc.Gateway{a, b, sim} {
		if code, err := g.Stop(30 * time.Second); err != nil || code != 0 {
			t.Errorf("stop %s: exit %d, %v", g.URL, code, err)
		}
	}
}

// contractProxy returns the URL of a reverse proxy to target that holds
// every request and answer to openapi.yaml (see checkContract).
func contractProxy(t *testing.T, target string) string {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httputil.NewSingleHostReverseProxy(u)
	proxy.Transport = &http.Transport{DisableKeepAlives: true}
	// The body is read here, in the handler, before it is sent on: the
	// checker records it as it is read, and the transport would read it
	// on a goroutine of its own, possibly after the answer.
	buffered := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(raw))
		proxy.ServeHTTP(w, r)
	})
	srv := httptest.NewServer(checkContract(t, buffered))
	t.Cleanup(srv.Close)
	return srv.URL
}
