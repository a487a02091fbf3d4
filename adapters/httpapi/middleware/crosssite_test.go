package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

func TestSiteGuard(t *testing.T) {
	t.Parallel()
	hosts, err := middleware.ParseAllowedHosts("gowa.example.com, *.internal.example")
	if err != nil {
		t.Fatal(err)
	}
	loop := middleware.NewSiteGuard(nil, true)
	listed := middleware.NewSiteGuard(hosts, true)
	open := middleware.NewSiteGuard(nil, false)
	const json = "application/json"
	for _, c := range []struct {
		name         string
		guard        *middleware.SiteGuard
		method, path string
		host         string
		hdr          []string // pairs
		body, ctype  string
		want         int
	}{
		{"curl POST", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "{}", json, 200},
		{"curl POST, charset", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "{}", "application/json; charset=UTF-8", 200},
		{"text/plain body", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "{}", "text/plain", 415},
		{"form body", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "a=b", "application/x-www-form-urlencoded", 415},
		{"no content type", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "{}", "", 415},
		{"JSON in another charset", loop, "POST", "/send/message", "127.0.0.1:3000", nil, "{}", "application/json; charset=latin1", 415},
		{"bodiless POST", loop, "POST", "/devices/d1/logout", "127.0.0.1:3000", nil, "", "", 200},
		{"Sec-Fetch-Site cross-site", loop, "POST", "/send/message", "127.0.0.1:3000", []string{"Sec-Fetch-Site", "cross-site"}, "{}", json, 403},
		{"Sec-Fetch-Site same-site", loop, "POST", "/send/message", "127.0.0.1:3000", []string{"Sec-Fetch-Site", "same-site"}, "{}", json, 403},
		{"Sec-Fetch-Site same-origin", loop, "POST", "/send/message", "127.0.0.1:3000", []string{"Sec-Fetch-Site", "same-origin", "Origin", "http://127.0.0.1:3000"}, "{}", json, 200},
		{"Sec-Fetch-Site none (typed URL)", loop, "GET", "/devices/d1/login", "localhost:3000", []string{"Sec-Fetch-Site", "none"}, "", "", 200},
		{"foreign Origin, old browser", loop, "POST", "/devices/d1/logout", "127.0.0.1:3000", []string{"Origin", "https://evil.example"}, "", "", 403},
		{"null Origin", loop, "DELETE", "/devices/d1", "127.0.0.1:3000", []string{"Origin", "null"}, "", "", 403},
		{"same Origin, old browser", loop, "POST", "/devices/d1/logout", "127.0.0.1:3000", []string{"Origin", "http://127.0.0.1:3000"}, "", "", 200},
		{"Origin on another port", loop, "POST", "/devices/d1/logout", "127.0.0.1:3000", []string{"Origin", "http://127.0.0.1:8080"}, "", "", 403},
		{"cross-site login GET", loop, "GET", "/devices/d1/login", "127.0.0.1:3000", []string{"Sec-Fetch-Site", "cross-site"}, "", "", 403},
		{"cross-site status GET", loop, "GET", "/devices/d1/status", "127.0.0.1:3000", []string{"Sec-Fetch-Site", "cross-site"}, "", "", 200},
		{"rebound name on loopback", loop, "GET", "/devices", "evil.example:3000", nil, "", "", 403},
		{"localhost", loop, "GET", "/devices", "localhost:3000", nil, "", "", 200},
		{"a .localhost name", loop, "GET", "/devices", "gowa.localhost:3000", nil, "", "", 200},
		{"IPv6 loopback", loop, "GET", "/devices", "[::1]:3000", nil, "", "", 200},
		{"listed name", listed, "GET", "/devices", "GOWA.example.com", nil, "", "", 200},
		{"listed wildcard", listed, "GET", "/devices", "a.b.internal.example:443", nil, "", "", 200},
		{"unlisted name", listed, "GET", "/devices", "other.example.com", nil, "", "", 403},
		{"listed Origin behind a proxy that rewrites Host", listed, "POST", "/devices/d1/logout", "127.0.0.1:3000", []string{"Origin", "https://gowa.example.com"}, "", "", 200},
		{"any name when not on loopback", open, "GET", "/devices", "gowa.example.com", nil, "", "", 200},
		{"still cross-site when not on loopback", open, "POST", "/devices/d1/logout", "gowa.example.com", []string{"Origin", "https://evil.example"}, "", "", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			var body *strings.Reader
			if c.body != "" {
				body = strings.NewReader(c.body)
			}
			req := httptest.NewRequest(c.method, "http://"+c.host+c.path, nil)
			if body != nil {
				req = httptest.NewRequest(c.method, "http://"+c.host+c.path, body)
			}
			req.Host = c.host
			if c.ctype != "" {
				req.Header.Set("Content-Type", c.ctype)
			}
			for i := 0; i+1 < len(c.hdr); i += 2 {
				req.Header.Set(c.hdr[i], c.hdr[i+1])
			}
			rec := httptest.NewRecorder()
			c.guard.Middleware(ok).ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Errorf("%d %s, want %d", rec.Code, rec.Body, c.want)
			}
			if c.want != 200 && !strings.HasPrefix(rec.Body.String(), `{"code":`) {
				t.Errorf("refusal not in the envelope: %s", rec.Body)
			}
		})
	}
	var nilGuard *middleware.SiteGuard
	rec := httptest.NewRecorder()
	nilGuard.Middleware(ok).ServeHTTP(rec, httptest.NewRequest("POST", "/x", strings.NewReader("x")))
	if rec.Code != http.StatusOK {
		t.Errorf("a nil guard refused: %d", rec.Code)
	}
}

func TestParseAllowedHosts(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"https://gowa.example.com", "gowa.example.com:443", "a,,b", "gowa.example.com/x", "*"} {
		_, err := middleware.ParseAllowedHosts(bad)
		if bad == "*" {
			if err != nil {
				t.Errorf("%q: %v", bad, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
