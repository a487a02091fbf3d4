package main

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/routers"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/contract"
)

// The end-to-end tests talk to gateways whose handler is wrapped by
// checkContract: every request they make and every answer they get is
// validated against openapi.yaml (the document the server serves) with
// kin-openapi, so the contract cannot drift from the server unnoticed.
//
// The rules:
//   - an answer to an operation of the contract must be one the operation
//     lists: its status, its headers (X-Request-Id, WWW-Authenticate,
//     Retry-After…), its media type and, for JSON, its body, nulls included;
//   - a request the contract forbids (a malformed id, a wrong body) must get
//     a 4xx: the server may not act on what the contract says it refuses.
//
// Requests to paths the contract does not have (the 404 and 405 tests) are
// not operations and are not checked here.

// contractChecker reports contract breaches to the test that started the
// gateway, and stops reporting once that test is over (a handler cut off by
// a shutdown may still finish later).
type contractChecker struct {
	t      *testing.T
	router routers.Router
	mu     sync.Mutex
	done   bool
}

// checkContract wraps h so that every request and answer is validated
// against the contract. It must be called before the gateway's own
// cleanup is registered, so that it stops reporting after the gateway
// stopped.
func checkContract(t *testing.T, h http.Handler) http.Handler {
	t.Helper()
	router, err := contract.Router()
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	c := &contractChecker{t: t, router: router}
	t.Cleanup(func() {
		c.mu.Lock()
		c.done = true
		c.mu.Unlock()
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		route, params, err := c.router.FindRoute(r)
		if err != nil {
			h.ServeHTTP(w, r)
			return
		}
		// The body is recorded as the server reads it, never read ahead of
		// it: a test of a stalled or oversized body must see the server's
		// own behaviour.
		var reqBody bytes.Buffer
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &teeBody{ReadCloser: r.Body, copy: &reqBody, limit: maxRecorded}
		}
		rec := &recordingWriter{ResponseWriter: w, status: http.StatusOK}
		h.ServeHTTP(rec, r)
		if rec.status == 499 {
			// The caller hung up: nobody receives this answer, and the
			// contract lists only what can be received (499 is log-only).
			return
		}
		if msg := c.check(r, route, params, reqBody.Bytes(), rec); msg != "" {
			c.report(msg)
		}
	})
}

// maxRecorded bounds what the checker keeps of a body; a longer one is
// not validated (the gateway's own limit is 1 MiB).
const maxRecorded = 2 << 20

func (c *contractChecker) check(r *http.Request, route *routers.Route, params map[string]string, reqBody []byte, rec *recordingWriter) string {
	if reqBody == nil {
		reqBody = []byte{}
	}
	return contract.Check(contract.Exchange{
		Request: r, RequestBody: reqBody,
		Status: rec.status, Header: rec.Header().Clone(), Body: rec.body.Bytes(), Truncated: rec.truncated,
	}, route, params)
}

func (c *contractChecker) report(msg string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.t.Errorf("contract: %s", msg)
	}
}

// teeBody copies what the server reads of a request body, up to limit.
type teeBody struct {
	io.ReadCloser
	copy  *bytes.Buffer
	limit int
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if room := b.limit - b.copy.Len(); room > 0 {
		b.copy.Write(p[:min(n, room)])
	}
	return n, err
}

// recordingWriter passes an answer through and keeps its status and (up to
// maxRecorded of) its body. Unwrap keeps http.ResponseController working
// for the handlers behind it.
type recordingWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool
	body        bytes.Buffer
	truncated   bool
}

func (w *recordingWriter) WriteHeader(status int) {
	if !w.wroteHeader && status >= 200 {
		w.status, w.wroteHeader = status, true
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	w.wroteHeader = true
	if room := maxRecorded - w.body.Len(); room >= len(p) {
		w.body.Write(p)
	} else {
		w.truncated = true
	}
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Flush() {
	w.wroteHeader = true
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// TestContractCheckerCatchesDrift proves the checker fails on what it must:
// a status the operation does not list, a missing header, a body that
// breaks its schema, and a 2xx to a request the contract refuses.
func TestContractCheckerCatchesDrift(t *testing.T) {
	router, err := contract.Router()
	if err != nil {
		t.Fatal(err)
	}
	c := &contractChecker{t: t, router: router}
	device := `{"device_id":"d1","state":"disconnected","reason":null,"jid":null,"phone":null,"push_name":null,"platform":null,` +
		`"logged_in":false,"connected":false,"state_since":"2026-12-01T10:00:00Z","last_error":null,"pairing":null,` +
		`"created_at":"2026-12-01T10:00:00Z","sandbox":true}`
	for _, tc := range []struct {
		name, method, path, reqBody string
		status                      int
		headers                     map[string]string
		body                        string
		want                        string // "" for no breach
	}{
		{"a device with nulls", "GET", "/devices/d1", "", 200, map[string]string{"X-Request-Id": "r1"},
			`{"code":200,"message":"OK","data":` + device + `}`, ""},
		{"no X-Request-Id", "GET", "/devices/d1", "", 200, nil,
			`{"code":200,"message":"OK","data":` + device + `}`, "X-Request-Id"},
		{"a status not listed", "GET", "/devices/d1", "", 418, map[string]string{"X-Request-Id": "r1"},
			`{"code":418,"message":"teapot","data":null}`, "status is not supported"},
		{"a 401 without its challenge", "GET", "/devices", "", 401, map[string]string{"X-Request-Id": "r1"},
			`{"code":401,"message":"Unauthorized","data":null}`, "WWW-Authenticate"},
		{"a 429 without Retry-After", "GET", "/devices", "", 429, map[string]string{"X-Request-Id": "r1"},
			`{"code":429,"message":"slow down","data":null}`, "Retry-After"},
		{"a field missing", "GET", "/devices/d1", "", 200, map[string]string{"X-Request-Id": "r1"},
			`{"code":200,"message":"OK","data":` + strings.Replace(device, `"pairing":null,`, "", 1) + `}`, "pairing"},
		{"an envelope without data", "GET", "/devices/d1", "", 404, map[string]string{"X-Request-Id": "r1"},
			`{"code":404,"message":"no"}`, "data"},
		{"a malformed id acted on", "GET", "/devices/-bad", "", 200, map[string]string{"X-Request-Id": "r1"},
			`{"code":200,"message":"OK","data":` + device + `}`, "refuses"},
		{"a malformed id refused", "GET", "/devices/-bad", "", 400, map[string]string{"X-Request-Id": "r1"},
			`{"code":400,"message":"device_id must match","data":null}`, ""},
		{"an unknown field acted on", "POST", "/devices", `{"device_id":"d1","color":"red"}`, 201, map[string]string{"X-Request-Id": "r1"},
			`{"code":201,"message":"Created","data":` + device + `}`, "refuses"},
		{"an empty message sent", "POST", "/send/message", `{"phone":"628111111111","message":""}`, 200, map[string]string{"X-Request-Id": "r1"},
			`{"code":200,"message":"sent","data":{"message_id":"X","timestamp":"2026-12-01T10:00:00Z","device_id":"d1"}}`, "refuses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := http.NewRequest(tc.method, tc.path, strings.NewReader(tc.reqBody))
			if err != nil {
				t.Fatal(err)
			}
			if tc.reqBody != "" {
				r.Header.Set("Content-Type", "application/json")
			}
			route, params, err := c.router.FindRoute(r)
			if err != nil {
				t.Fatal(err)
			}
			rec := &recordingWriter{ResponseWriter: discardWriter{http.Header{}}, status: tc.status}
			rec.Header().Set("Content-Type", "application/json")
			for k, v := range tc.headers {
				rec.Header().Set(k, v)
			}
			rec.body.WriteString(tc.body)
			got := c.check(r, route, params, []byte(tc.reqBody), rec)
			switch {
			case tc.want == "" && got != "":
				t.Errorf("a breach where there is none: %s", got)
			case tc.want != "" && !strings.Contains(got, tc.want):
				t.Errorf("want a breach mentioning %q, got %q", tc.want, got)
			}
		})
	}
}

type discardWriter struct{ h http.Header }

func (d discardWriter) Header() http.Header         { return d.h }
func (d discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d discardWriter) WriteHeader(int)             {}

// TestContractOfTheRarerAnswers makes the answers the other end-to-end
// tests do not, so that the contract check sees them too: the document
// itself, a reconnect, a network fault, a device deleted while linked.
func TestContractOfTheRarerAnswers(t *testing.T) {
	t.Parallel()
	// A device linked to Alice's phone (the shared linked folder): the
	// login and scan answers are checked wherever other tests pair.
	dir, _ := linkedCopy(t)
	tg := startGateway(t, dir, withAuth("admin:contract-pass"))
	tg.waitState("dev", api.Connected)

	if code, env := tg.do("POST", "/devices/dev/reconnect", ""); code != 200 {
		t.Errorf("reconnect: %d %s", code, env.raw)
	}
	tg.waitState("dev", api.Connected)
	if code, env := tg.do("POST", "/sandbox/network", `{"drop":false,"refuse_seconds":0}`); code != 200 {
		t.Errorf("network fault: %d %s", code, env.raw)
	}
	if code, env := tg.do("DELETE", "/devices/dev", ""); code != 200 {
		t.Errorf("delete: %d %s", code, env.raw)
	}
	if code, env := tg.do("DELETE", "/devices/dev", ""); code != 404 {
		t.Errorf("delete again: %d %s", code, env.raw)
	}

	req, err := http.NewRequest("GET", tg.url+"/openapi.yaml", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(tg.user, tg.pass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	doc, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(doc, api.Spec) {
		t.Errorf("GET /openapi.yaml: %d, %d bytes, want the %d of api.Spec", resp.StatusCode, len(doc), len(api.Spec))
	}
}
