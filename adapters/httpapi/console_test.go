package httpapi_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

// The console is served at / behind the API's own authentication, and not
// at all with UI off.
func TestConsoleIsGuardedLikeTheAPI(t *testing.T) {
	t.Parallel()
	creds, _ := middleware.ParseCredentials("admin:secret")
	auth, _ := middleware.NewAuth(creds, "", nil)
	guard := middleware.NewSiteGuard(nil, true)
	on := serveEdge(t, httpapi.Config{Auth: auth, Sites: guard, UI: true}, httpapi.Limits{})
	off := serveEdge(t, httpapi.Config{Auth: auth, Sites: guard}, httpapi.Limits{})

	do := func(url string, user string, hdr ...string) (int, http.Header, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", url, nil)
		if user != "" {
			req.SetBasicAuth(user, "secret")
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	code, hdr, body := do(on.url+"/", "")
	if code != 401 || body != `{"code":401,"message":"Unauthorized","data":null}` || !strings.HasPrefix(hdr.Get("WWW-Authenticate"), "Basic ") {
		t.Errorf("GET / without credentials: %d %q %q", code, hdr.Get("WWW-Authenticate"), body)
	}
	code, hdr, body = do(on.url+"/", "admin")
	if code != 200 || !strings.Contains(body, `<script src="/console/console.js"`) || !strings.Contains(hdr.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Errorf("GET / with credentials: %d %q, %.60q", code, hdr.Get("Content-Security-Policy"), body)
	}
	if code, _, _ = do(on.url+"/console/console.js", "admin"); code != 200 {
		t.Errorf("GET /console/console.js: %d", code)
	}
	if code, _, body = do(on.url+"/console/missing.js", "admin"); code != 404 || !strings.Contains(body, `"code":404`) {
		t.Errorf("GET /console/missing.js: %d %q, want the 404 envelope", code, body)
	}
	// A rebinding page's Host is refused before anything is served.
	if code, _, _ = do(on.url+"/", "admin", "Host", "evil.example"); code != 403 {
		t.Errorf("GET / for Host evil.example: %d, want 403", code)
	}
	if code, _, body = do(off.url+"/", "admin"); code != 404 || !strings.Contains(body, `"code":404`) {
		t.Errorf("GET / with the console off: %d %q, want the 404 envelope", code, body)
	}
	if code, _, _ = do(off.url+"/console/console.js", "admin"); code != 404 {
		t.Errorf("GET /console/console.js with the console off: %d, want 404", code)
	}
}
