package console

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func notFound(w http.ResponseWriter, _ *http.Request) { http.Error(w, "nope", http.StatusNotFound) }

func get(t *testing.T, h http.Handler, method, path string, hdr ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestServesThePageAndItsFiles(t *testing.T) {
	h := New(http.HandlerFunc(notFound))
	for path, ctype := range map[string]string{
		"/":                    "text/html; charset=utf-8",
		Prefix + "console.js":  "text/javascript; charset=utf-8",
		Prefix + "console.css": "text/css; charset=utf-8",
		Prefix + "icon.svg":    "image/svg+xml",
	} {
		resp := get(t, h, "GET", path)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || len(body) == 0 {
			t.Errorf("GET %s: %d, %d bytes", path, resp.StatusCode, len(body))
		}
		if got := resp.Header.Get("Content-Type"); got != ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", path, got, ctype)
		}
		for name, want := range map[string]string{
			"Content-Security-Policy": SecurityPolicy,
			"Referrer-Policy":         "no-referrer",
			"X-Content-Type-Options":  "nosniff",
			"X-Frame-Options":         "DENY",
		} {
			if got := resp.Header.Get(name); got != want {
				t.Errorf("GET %s: %s %q, want %q", path, name, got, want)
			}
		}
		// A second load revalidates and gets 304.
		if again := get(t, h, "GET", path, "If-None-Match", resp.Header.Get("ETag")); again.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: %d, want 304", path, again.StatusCode)
		}
		if head := get(t, h, "HEAD", path); head.StatusCode != 200 {
			t.Errorf("HEAD %s: %d", path, head.StatusCode)
		}
	}
	for _, path := range []string{Prefix + "nope.js", Prefix, Prefix + "index.html", Prefix + "../console.go", "/index.html"} {
		if resp := get(t, h, "GET", path); resp.StatusCode != 404 {
			t.Errorf("GET %s: %d, want the API's 404", path, resp.StatusCode)
		}
	}
}

// TestPolicyAllowsNothingInline holds the policy to its promise and the
// page to the policy: no inline script, style or handler that the browser
// would refuse.
func TestPolicyAllowsNothingInline(t *testing.T) {
	for _, directive := range []string{"script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(SecurityPolicy, directive+";") && !strings.HasSuffix(SecurityPolicy, directive) {
			t.Errorf("the policy lacks %q", directive)
		}
	}
	if strings.Contains(SecurityPolicy, "unsafe") {
		t.Errorf("the policy allows something unsafe: %s", SecurityPolicy)
	}
	page, err := files.ReadFile("static/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for what, re := range map[string]*regexp.Regexp{
		"an inline script":       regexp.MustCompile(`<script(\s[^>]*)?>\s*[^<\s]`),
		"a style element":        regexp.MustCompile(`<style[\s>]`),
		"a style attribute":      regexp.MustCompile(`\sstyle=`),
		"an event handler":       regexp.MustCompile(`\son[a-z]+=`),
		"a javascript: URL":      regexp.MustCompile(`javascript:`),
		"a file of another site": regexp.MustCompile(`(src|href)="(https?:)?//`),
	} {
		if m := re.Find(page); m != nil {
			t.Errorf("index.html has %s: %q", what, m)
		}
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAll(page, -1) {
		if !strings.Contains(string(tag), ` src="/console/`) {
			t.Errorf("index.html has a script that is not one of the console's files: %s", tag)
		}
	}
	js, err := files.ReadFile("static/console.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "localStorage", ".style.", "setAttribute('style'"} {
		if strings.Contains(string(js), bad) {
			t.Errorf("console.js uses %s: text from the network must go in as text, styles by class, and nothing in localStorage", bad)
		}
	}
}
