package main

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBadInputGetsClear4xx(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tg := startGateway(t, dir)
	tg.createPhone(alice, "Alice")
	if code, _ := tg.do("POST", "/devices", `{"device_id":"exists"}`); code != 201 {
		t.Fatalf("create: %d", code)
	}
	huge := `{"phone":"` + alice + `","message":"` + strings.Repeat("x", 2<<20) + `"}`
	cases := []struct {
		name, method, path, body string
		hdr                      []string
		want                     int
	}{
		{"bad device id in login", "GET", "/devices/-bad/login", "", nil, 400},
		{"device id too long", "GET", "/devices/" + strings.Repeat("a", 65) + "/login", "", nil, 400},
		{"path trick", "GET", "/devices/..%2F..%2Fetc/login", "", nil, 400},
		{"unknown device", "GET", "/devices/nobody", "", nil, 404},
		{"unknown device status", "GET", "/devices/nobody/status", "", nil, 404},
		{"logout unknown", "POST", "/devices/nobody/logout", "", nil, 404},
		{"logout not logged in", "POST", "/devices/exists/logout", "", nil, 409},
		{"reconnect not logged in", "POST", "/devices/exists/reconnect", "", nil, 409},
		{"create twice", "POST", "/devices", `{"device_id":"exists"}`, nil, 409},
		{"create bad id", "POST", "/devices", `{"device_id":"a/b"}`, nil, 400},
		{"create empty id", "POST", "/devices", `{"device_id":""}`, nil, 400},
		{"broken JSON", "POST", "/devices", `{"device_id":`, nil, 400},
		{"wrong type", "POST", "/devices", `{"device_id":42}`, nil, 400},
		{"code without phone", "POST", "/devices/x1/login/code", `{}`, nil, 400},
		{"code with short phone", "POST", "/devices/x1/login/code", `{"phone":"12345"}`, nil, 400},
		{"code with letters", "POST", "/devices/x1/login/code", `{"phone":"62812abc9"}`, nil, 400},
		{"code with leading zero", "POST", "/devices/x1/login/code", `{"phone":"0812345678"}`, nil, 400},
		{"send without body", "POST", "/send/message", ``, []string{"X-Device-Id", "exists"}, 400},
		{"send bad phone", "POST", "/send/message", `{"phone":"abc","message":"hi"}`, []string{"X-Device-Id", "exists"}, 400},
		{"send group JID", "POST", "/send/message", `{"phone":"123-456@g.us","message":"hi"}`, []string{"X-Device-Id", "exists"}, 400},
		{"send empty message", "POST", "/send/message", `{"phone":"` + alice + `","message":""}`, []string{"X-Device-Id", "exists"}, 400},
		{"send unknown device", "POST", "/send/message", `{"phone":"` + alice + `","message":"hi"}`, []string{"X-Device-Id", "nobody"}, 404},
		{"send not connected", "POST", "/send/message", `{"phone":"` + alice + `","message":"hi"}`, []string{"X-Device-Id", "exists"}, 409},
		{"send bad device header", "POST", "/send/message", `{"phone":"` + alice + `","message":"hi"}`, []string{"X-Device-Id", "../x"}, 400},
		{"huge body", "POST", "/send/message", huge, []string{"X-Device-Id", "exists"}, 413},
		{"unknown route", "GET", "/nope", "", nil, 404},
		{"wrong method", "PUT", "/devices", "", nil, 405},
		{"sandbox unknown phone", "GET", "/sandbox/phones/628999999999/messages", "", nil, 404},
		{"sandbox scan garbage", "POST", "/sandbox/phones/" + alice + "/scan", `{"qr":"garbage"}`, nil, 400},
		{"sandbox refusal overflowing a duration", "POST", "/sandbox/network", `{"refuse_seconds":18446744074}`, nil, 400},
		{"sandbox negative refusal", "POST", "/sandbox/network", `{"refuse_seconds":-1}`, nil, 400},
		{"sandbox bad code", "POST", "/sandbox/phones/" + alice + "/link-code", `{"code":"AAAA-AAAA"}`, nil, 409},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, env := tg.do(c.method, c.path, c.body, c.hdr...)
			if code != c.want {
				t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, env.raw, c.want)
			}
			if env.Message == "" {
				t.Errorf("no message in %s", env.raw)
			}
		})
	}
	// Nothing was written outside the storage folder's known entries.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		switch name := e.Name(); {
		case name == "registry.db", strings.HasPrefix(name, "registry.db-"), name == "events.db", strings.HasPrefix(name, "events.db-"), name == ".wasim", name == ".pairing", name == ".trash", name == ".lock":
		default:
			t.Errorf("unexpected entry in the storage folder: %s", filepath.Join(dir, name))
		}
	}
}

func TestBasicAuth(t *testing.T) {
	t.Parallel()
	tg := startGateway(t, t.TempDir(), withAuth("admin:s3cret:with:colons,api:token456"))
	for _, c := range []struct {
		name       string
		user, pass string
		want       int
	}{
		{"no credentials", "", "", 401},
		{"wrong password", "admin", "nope", 401},
		{"unknown user", "root", "s3cret:with:colons", 401},
		{"first pair", "admin", "s3cret:with:colons", 200},
		{"second pair", "api", "token456", 200},
	} {
		req, _ := http.NewRequest("GET", tg.url+"/devices", nil)
		if c.user != "" {
			req.SetBasicAuth(c.user, c.pass)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s: %d, want %d", c.name, resp.StatusCode, c.want)
		}
		if c.want == 401 {
			if string(raw) != `{"code":401,"message":"Unauthorized","data":null}` {
				t.Errorf("%s: body %q", c.name, raw)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic realm=") {
				t.Errorf("%s: WWW-Authenticate %q", c.name, resp.Header.Get("WWW-Authenticate"))
			}
		}
	}
	for _, path := range []string{"/health", "/readyz"} {
		resp, err := http.Get(tg.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s without credentials: %d", path, resp.StatusCode)
		}
	}
	checkNoSecrets(t, tg.logs.String(), "s3cret:with:colons", "token456")
}
