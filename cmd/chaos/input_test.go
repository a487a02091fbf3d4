package chaos

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// badRequest is one malformed request of the corpus.
type badRequest struct {
	method, path string
	body         []byte
	header       http.Header
	noAuth       bool // send no credentials unless header carries some
}

func (r badRequest) String() string {
	return fmt.Sprintf("%s %.120s (body %d bytes, headers %.160v)", r.method, r.path, len(r.body), r.header)
}

// TestChaosBadInput sends a generated corpus of malformed requests (broken
// JSON, wrong types, huge bodies, odd ids and phone numbers, path tricks,
// bad auth headers, wrong methods, and the values of the repository's fuzz
// corpora): no 5xx, every answer is the JSON envelope, the process stays
// up, and nothing is written outside the storage folder.
func TestChaosBadInput(t *testing.T) {
	t.Parallel()
	tree := t.TempDir()
	storages := filepath.Join(tree, "storages")
	workDir := filepath.Join(tree, "cwd")
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The corpus holds many bad credentials: each comes through the test
	// (a trusted proxy) from its own client address, so that the throttle
	// of failed logins, which is per client, does not answer 429 to the
	// rest of the corpus.
	g := startWith(t, proc.Options{Storages: storages, WorkDir: workDir, Args: []string{"--trusted-proxies", "127.0.0.1"}})
	if err := g.CreatePhone("628500000001", "Input"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.LinkQR("real", "628500000001"); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, tree, storages)

	corpus := badCorpus(t)
	if len(corpus) < 200 {
		t.Fatalf("the corpus has %d requests, want at least 200", len(corpus))
	}
	client := &http.Client{
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	byStatus := map[int]int{}
	for _, br := range corpus {
		req, err := http.NewRequest(br.method, g.URL+"/", bytes.NewReader(br.body))
		if err != nil {
			t.Fatalf("%v: %v", br, err)
		}
		// Set the path raw, so that nothing cleans or re-escapes the trick.
		req.URL.Opaque = "//" + req.URL.Host + br.path
		if i := strings.IndexByte(br.path, '?'); i >= 0 {
			req.URL.Opaque = "//" + req.URL.Host + br.path[:i]
			req.URL.RawQuery = br.path[i+1:]
		}
		for k, vs := range br.header {
			req.Header[k] = vs
		}
		if !br.noAuth && req.Header.Get("Authorization") == "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%v: %v", br, err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		byStatus[resp.StatusCode]++
		if resp.StatusCode >= 500 {
			t.Errorf("%v: %d %s", br, resp.StatusCode, raw)
		}
		if br.method == "HEAD" {
			continue
		}
		var env struct {
			Code    *int             `json:"code"`
			Message *string          `json:"message"`
			Data    *json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &env); err != nil || env.Code == nil || env.Message == nil {
			t.Errorf("%v: %d, not the envelope: %.200q", br, resp.StatusCode, raw)
		} else if *env.Code != resp.StatusCode {
			t.Errorf("%v: envelope code %d, HTTP %d", br, *env.Code, resp.StatusCode)
		}
		if done, code := g.Exited(); done {
			t.Fatalf("the gateway exited (code %d) after %v", code, br)
		}
	}
	t.Logf("%d malformed requests; answers by status: %v", len(corpus), byStatus)

	if d, err := g.Status("real"); err != nil || d.State != "connected" {
		t.Errorf("the linked device after the corpus: %s %v", d.State, err)
	}
	code, err := g.Stop(30 * time.Second)
	if err != nil || code != 0 {
		t.Errorf("stop: code %d, %v", code, err)
	}
	after := snapshot(t, tree, storages)
	for p, v := range after {
		if before[p] != v {
			t.Errorf("written outside the storage folder: %s", p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			t.Errorf("removed outside the storage folder: %s", p)
		}
	}
}

// snapshot records every path under tree, except inside skip, with its
// size, mode and modification time.
func snapshot(t *testing.T, tree, skip string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(tree, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == skip {
			return filepath.SkipDir
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[path] = fmt.Sprintf("%d %v %d", info.Size(), info.Mode(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// badCorpus generates the malformed requests.
func badCorpus(t *testing.T) []badRequest {
	var c []badRequest
	jsonHdr := func() http.Header { return http.Header{"Content-Type": {"application/json"}} }
	add := func(method, path string, body []byte, h http.Header) {
		if h == nil {
			h = jsonHdr()
		}
		c = append(c, badRequest{method: method, path: path, body: body, header: h})
	}

	oddIDs := []string{
		"..", ".", "..%2F..%2Fetc", "..%2f..%2f..%2fetc%2fpasswd", "%2e%2e", "%2e%2e%2f%2e%2e", "%252e%252e",
		"a%2Fb", "a%5Cb", "..%5C..%5Cwindows", "%00", "a%00b", "-leading", "_x", ".hidden", "a%20b",
		"%C3%B1and%C3%BA", strings.Repeat("x", 65), strings.Repeat("y", 4000), "%FF%FE", "$(id)", "%27%3B--",
		"CON", "a*b", "%7B%7D", "storages", "registry.db", "..%2Fregistry.db", "%2Fetc%2Fpasswd",
	}
	for _, id := range oddIDs {
		for _, ep := range []struct{ method, suffix string }{
			{"GET", ""}, {"GET", "/status"}, {"GET", "/login"}, {"POST", "/login/code"},
			{"POST", "/logout"}, {"POST", "/reconnect"}, {"DELETE", ""},
		} {
			var body []byte
			if ep.method == "POST" {
				body = []byte(`{"phone":"628123456789"}`)
			}
			add(ep.method, "/devices/"+id+ep.suffix, body, nil)
		}
	}
	for _, p := range []string{
		"/devices/..%2F..%2Fetc", "/devices/../../etc/passwd", "/devices/real/../../../etc", "/devices//status",
		"//devices", "/devices/", "/devices/real/status/", "/devices/real/status/extra", "/.env", "/storages/registry.db",
		"/registry.db", "/.wasim/world.db", "/..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/sandbox/phones/..%2F..%2Fx/messages",
		"/sandbox/phones/628500000001/devices/..%2F..%2Fregistry.db", "/sandbox/phones/%00/devices", "/api/devices", "/DEVICES",
		"/devices?device_id=../../x", "/health/../devices", "/readyz%00", "/devices/real/status?x=%ZZ",
	} {
		add("GET", p, nil, nil)
		add("DELETE", p, nil, nil)
	}

	bodies := [][]byte{
		nil, []byte(""), []byte("{"), []byte("}"), []byte("null"), []byte("[]"), []byte("123"), []byte(`"str"`),
		[]byte(`{"phone":123,"message":"x"}`), []byte(`{"phone":null,"message":"x"}`), []byte(`{"phone":["628123456789"],"message":"x"}`),
		[]byte(`{"phone":{"a":1},"message":"x"}`), []byte(`{"phone":"628123456789","message":true}`), []byte(`{"phone":"628123456789","message":""}`),
		[]byte(`{"phone":"628123456789","message":"x"}garbage`), []byte("\xef\xbb\xbf{\"phone\":\"628123456789\",\"message\":\"x\"}"),
		[]byte("{\"phone\":\"\xff\xfe\",\"message\":\"x\"}"), []byte(`{"phone":"628123456789","phone":"1","message":"x"}`),
		[]byte(strings.Repeat("[", 100000)), []byte(`{"device_id":` + strings.Repeat(`{"a":`, 5000) + `1` + strings.Repeat(`}`, 5000) + `}`),
		bytes.Repeat([]byte("A"), 2<<20), []byte(`{"message":"` + strings.Repeat("m", 3<<20) + `","phone":"628123456789"}`),
		[]byte(`{"device_id":"../../etc"}`), []byte(`{"device_id":""}`), []byte(`{"device_id":` + strconv.Quote(strings.Repeat("z", 300)) + `}`),
		[]byte(`{"qr":"2@garbage,,,"}`), []byte(`{"qr":""}`), []byte(`{"code":"ABCD-12345"}`), []byte(`{"code":"../.."}`),
	}
	for _, b := range bodies {
		for _, p := range []string{"/send/message", "/devices", "/devices/real/login/code", "/sandbox/phones",
			"/sandbox/phones/628500000001/scan", "/sandbox/phones/628500000001/link-code"} {
			h := jsonHdr()
			h.Set("X-Device-Id", "real")
			add("POST", p, b, h)
		}
	}

	phones := []string{"", "+", "+-1", "123", "123456", "1234567890123456", "12345678901234567890", "628 123 456 789",
		"628-123-456-789", "\uff16\uff12\uff18\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19", "628123456789@g.us", "@s.whatsapp.net",
		"628123456789:1@s.whatsapp.net", "../../etc/passwd", "0812345678", "628123456789\x00", "1e10", "-628123456789", "+628123456789+"}
	fuzz := fuzzValues(t)
	phones = append(phones, fuzz...)
	for _, ph := range phones {
		body, _ := json.Marshal(map[string]string{"phone": ph, "message": "hi"})
		h := jsonHdr()
		h.Set("X-Device-Id", "real")
		add("POST", "/send/message", body, h)
		add("POST", "/devices/odd-code/login/code", body, nil)
		add("POST", "/devices/odd-code/login/code?phone="+urlQuery(ph), nil, nil)
		add("POST", "/sandbox/phones", body, nil)
	}
	for _, id := range []string{"", "../x", "..", strings.Repeat("d", 1000), "nobody", "a b"} {
		h := jsonHdr()
		h.Set("X-Device-Id", id)
		add("POST", "/send/message", []byte(`{"phone":"628123456789","message":"x"}`), h)
	}
	for _, ct := range []string{"text/plain", "application/xml", "multipart/form-data; boundary=x", "application/json; charset=latin1", ""} {
		add("POST", "/send/message", []byte(`{"phone":"628123456789","message":"x"}`), http.Header{"Content-Type": {ct}, "X-Device-Id": {"real"}})
	}

	auths := []string{"", "Basic", "Basic ", "Basic !!!", "Basic " + b64("nocolon"), "Bearer abc", "basic " + b64(user+":"+pass+"x"),
		"Basic " + b64(user+":"), "Basic " + b64(":"+pass), "Basic " + b64(user+":"+pass+"\x00"), "Basic " + strings.Repeat("A", 10000),
		"Basic " + b64(strings.Repeat("u", 5000)+":"+pass), "Digest username=chaos", "Basic " + b64("\xff\xfe:\xff"), "Basic =====",
		"Basic " + b64(user+":"+pass) + " extra"}
	for _, cred := range fuzz {
		auths = append(auths, "Basic "+b64(cred))
	}
	for i, a := range auths {
		for j, p := range []string{"/devices", "/devices/real/status", "/metrics", "/sandbox/connections"} {
			h := http.Header{"X-Forwarded-For": {fmt.Sprintf("198.51.%d.%d", i%200, j+1)}}
			if a != "" {
				h.Set("Authorization", a)
			}
			c = append(c, badRequest{method: "GET", path: p, header: h, noAuth: true})
		}
	}
	for _, xff := range append([]string{"", "not-an-ip", "1.2.3.4, , ,", strings.Repeat("9.9.9.9,", 2000), "::1%eth0", "[::1]:80"}, headerSafe(fuzz)...) {
		add("GET", "/devices", nil, http.Header{"X-Forwarded-For": {xff}, "X-Forwarded-Proto": {"gopher"}})
	}

	for _, m := range []string{"PUT", "PATCH", "OPTIONS", "TRACE", "BREW", "HEAD", "CONNECTX"} {
		for _, p := range []string{"/devices", "/devices/real", "/devices/real/login", "/send/message", "/health", "/sandbox/phones"} {
			add(m, p, []byte(`{}`), nil)
		}
	}
	return c
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func urlQuery(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// fuzzValues reads the string values of the repository's fuzz corpora
// (testdata/fuzz/*/*, "go test fuzz v1" files), to replay them as
// credentials, phone numbers and forwarded-for headers.
func fuzzValues(t *testing.T) []string {
	var out []string
	root := filepath.Join("..", "..")
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && (d.Name() == ".git" || strings.HasPrefix(d.Name(), "storages")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.Contains(filepath.ToSlash(path), "/testdata/fuzz/") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			for _, prefix := range []string{"string(", "[]byte("} {
				if q, ok := strings.CutPrefix(line, prefix); ok {
					if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil && len(s) < 4096 {
						out = append(out, s)
					}
				}
			}
		}
		return nil
	})
	t.Logf("%d values from the fuzz corpora", len(out))
	return out
}

// headerSafe keeps the values a client may send as header values.
func headerSafe(vs []string) []string {
	var out []string
	for _, v := range vs {
		if !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			out = append(out, v)
		}
	}
	return out
}
