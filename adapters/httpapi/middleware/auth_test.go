package middleware_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

const unauthorizedBody = `{"code":401,"message":"Unauthorized","data":null}`

// ok is the handler behind the middleware under test.
var ok = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte("through"))
})

// try sends GET / as user:pass ("" for no credentials) through h.
func try(h http.Handler, user, pass string) *httptest.ResponseRecorder {
	req := httptest.NewRequest("GET", "/", nil)
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func mustCreds(t *testing.T, s string) []middleware.Credential {
	t.Helper()
	c, err := middleware.ParseCredentials(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// syncBuffer is a log sink safe for the watcher goroutine and the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func TestAuthComparison(t *testing.T) {
	t.Parallel()
	a, err := middleware.NewAuth(mustCreds(t, "admin:s3cret:with:colons,api:token456"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Enabled() {
		t.Fatal("not enabled with credentials")
	}
	var failures int
	h := a.Middleware("gowa", func(*http.Request) { failures++ })(ok)
	for _, c := range []struct {
		name       string
		user, pass string
		want       int
	}{
		{"first user", "admin", "s3cret:with:colons", 200},
		{"second user", "api", "token456", 200},
		{"no credentials", "", "", 401},
		{"wrong password", "admin", "nope", 401},
		{"password prefix", "admin", "s3cret", 401},
		{"password of another user", "admin", "token456", 401},
		{"unknown user", "root", "s3cret:with:colons", 401},
		{"empty password", "admin", "", 401},
		{"user differs in case", "Admin", "s3cret:with:colons", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := failures
			rec := try(h, c.user, c.pass)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d", rec.Code, c.want)
			}
			if c.want == 200 {
				if failures != before {
					t.Error("onFail called on success")
				}
				return
			}
			if failures != before+1 {
				t.Error("onFail not called once")
			}
			if got := rec.Body.String(); got != unauthorizedBody {
				t.Errorf("body %q, want %q", got, unauthorizedBody)
			}
			if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, `Basic realm="gowa"`) {
				t.Errorf("WWW-Authenticate %q", got)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type %q", got)
			}
		})
	}
}

func TestAuthMalformedHeader(t *testing.T) {
	t.Parallel()
	a, err := middleware.NewAuth(mustCreds(t, "admin:secret"), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := a.Middleware("gowa", nil)(ok)
	for _, v := range []string{"Basic", "Basic !!!", "Bearer secret", "basic YWRtaW4=", "Basic YWRtaW46c2VjcmV0eA=="} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Authorization", v)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 401 || rec.Body.String() != unauthorizedBody {
			t.Errorf("Authorization %q: %d %q", v, rec.Code, rec.Body)
		}
	}
}

func TestAuthDisabledWithoutCredentials(t *testing.T) {
	t.Parallel()
	a, err := middleware.NewAuth(nil, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if a.Enabled() {
		t.Fatal("enabled without credentials")
	}
	if rec := try(a.Middleware("gowa", nil)(ok), "", ""); rec.Code != 200 {
		t.Fatalf("open API answered %d", rec.Code)
	}
	if err := a.Reload(); err != nil {
		t.Fatalf("Reload without a file: %v", err)
	}
	var nilAuth *middleware.Auth
	if nilAuth.Enabled() {
		t.Fatal("nil Auth enabled")
	}
}

func TestAuthFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "credentials")
	writeFile(t, file, "\ufeff# managed by ops\n\nfromfile:pass-1\r\n  other:with:colon  \n")
	a, err := middleware.NewAuth(mustCreds(t, "static:pass-0"), file, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := a.Middleware("gowa", nil)(ok)
	for _, c := range []struct{ user, pass string }{{"static", "pass-0"}, {"fromfile", "pass-1"}, {"other", "with:colon"}} {
		if rec := try(h, c.user, c.pass); rec.Code != 200 {
			t.Errorf("%s: %d", c.user, rec.Code)
		}
	}
}

func TestNewAuthRejectsBadFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, c := range []struct {
		name, content, want string
		secrets             []string
	}{
		{"no colon", "good:pass-1\nbadlinesecret\n", "line 2: missing ':'", []string{"badlinesecret", "pass-1"}},
		{"empty password", "# c\nalice:\n", "line 2: empty password", []string{"alice"}},
		{"duplicate user", "bob:pw-one\nbob:pw-two\n", "line 2: user given twice", []string{"pw-one", "pw-two"}},
		{"only comments", "# nothing here\n\n", "no credentials", nil},
		{"empty", "", "no credentials", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			file := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "-"))
			writeFile(t, file, c.content)
			_, err := middleware.NewAuth(nil, file, nil)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("NewAuth: %v, want %q", err, c.want)
			}
			for _, s := range c.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q echoes %q", err, s)
				}
			}
		})
	}
	if _, err := middleware.NewAuth(nil, filepath.Join(dir, "missing"), nil); err == nil {
		t.Fatal("NewAuth with a missing file succeeded")
	}
}

func TestAuthReload(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "credentials")
	writeFile(t, file, "old:pass-1\n")
	a, err := middleware.NewAuth(mustCreds(t, "static:pass-0"), file, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := a.Middleware("gowa", nil)(ok)
	expect := func(user, pass string, want int) {
		t.Helper()
		if rec := try(h, user, pass); rec.Code != want {
			t.Fatalf("%s: %d, want %d", user, rec.Code, want)
		}
	}
	expect("old", "pass-1", 200)

	writeFile(t, file, "new:pass-2\n")
	if err := a.Reload(); err != nil {
		t.Fatal(err)
	}
	expect("new", "pass-2", 200)
	expect("old", "pass-1", 401)
	expect("static", "pass-0", 200)

	// A bad file keeps the previous set and says where, not what.
	writeFile(t, file, "new:pass-2\nbroken-secret-line\n")
	err = a.Reload()
	if err == nil || !strings.Contains(err.Error(), "line 2") || strings.Contains(err.Error(), "broken-secret-line") {
		t.Fatalf("Reload of a bad file: %v", err)
	}
	expect("new", "pass-2", 200)

	// So does a missing one.
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	if err := a.Reload(); err == nil {
		t.Fatal("Reload of a missing file succeeded")
	}
	expect("new", "pass-2", 200)
	expect("static", "pass-0", 200)
}

func TestAuthWatch(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "credentials")
	writeFile(t, file, "old:pass-1\n")
	var logs syncBuffer
	a, err := middleware.NewAuth(nil, file, slog.New(slog.NewJSONHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	h := a.Middleware("gowa", nil)(ok)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		a.Watch(ctx, 10*time.Millisecond)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Same size, so only the content (or the time) tells the change.
	writeFile(t, file, "new:pass-2\n")
	eventually(t, 5*time.Second, func() bool { return try(h, "new", "pass-2").Code == 200 }, "new credentials live")
	if rec := try(h, "old", "pass-1"); rec.Code != 401 {
		t.Fatalf("old credentials after rotation: %d", rec.Code)
	}

	writeFile(t, file, "no colon here\n")
	eventually(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "keeping the previous") }, "bad file logged")
	if rec := try(h, "new", "pass-2"); rec.Code != 200 {
		t.Fatalf("credentials after a bad file: %d", rec.Code)
	}

	writeFile(t, file, "third:pass-3\n")
	eventually(t, 5*time.Second, func() bool { return try(h, "third", "pass-3").Code == 200 }, "file fixed")
	if rec := try(h, "new", "pass-2"); rec.Code != 401 {
		t.Fatalf("replaced credentials still work: %d", rec.Code)
	}
	if l := logs.String(); strings.Contains(l, "pass-") || strings.Contains(l, "no colon here") {
		t.Fatalf("a secret reached the logs: %s", l)
	}
}

func TestAuthRotationUnderLoad(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "credentials")
	writeFile(t, file, "a:pass-a\n")
	auth, err := middleware.NewAuth(nil, file, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := auth.Middleware("gowa", nil)(ok)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				try(h, "a", "pass-a")
			}
		}()
	}
	for i := range 50 {
		content := "a:pass-a\n"
		if i%2 == 1 {
			content = "b:pass-b\n"
		}
		writeFile(t, file, content)
		if err := auth.Reload(); err != nil {
			t.Error(err)
		}
	}
	close(stop)
	wg.Wait()
	// The last file (i = 49) named only b: the swaps ended on that set.
	if got := try(h, "b", "pass-b").Code; got != 200 {
		t.Errorf("the last set's credentials: %d", got)
	}
	if got := try(h, "a", "pass-a").Code; got != 401 {
		t.Errorf("a rotated-away credential: %d", got)
	}
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, within time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
