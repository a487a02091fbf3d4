package middleware_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

const tooLargeBody = `{"code":413,"message":"request body too large","data":null}`

func TestMaxBody(t *testing.T) {
	t.Parallel()
	// The handler decodes the body and maps *http.MaxBytesError to 413,
	// as the API's error handling does.
	decode := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v any
		err := json.NewDecoder(r.Body).Decode(&v)
		var tooLarge *http.MaxBytesError
		switch {
		case errors.As(err, &tooLarge):
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		case err != nil:
			w.WriteHeader(http.StatusBadRequest)
		default:
			w.WriteHeader(http.StatusOK)
		}
	})
	small := `{"a":"` + strings.Repeat("x", 100) + `"}`
	big := `{"a":"` + strings.Repeat("x", 2<<20) + `"}`
	for _, c := range []struct {
		name       string
		limit      int64
		body       string
		hideLength bool
		want       int
		envelope   bool
	}{
		{"small body", 0, small, false, 200, false},
		{"declared too large", 0, big, false, 413, true},
		{"undeclared too large", 0, big, true, 413, false},
		{"custom limit, declared", 50, small, false, 413, true},
		{"custom limit, undeclared", 50, small, true, 413, false},
		{"exactly the limit", int64(len(small)), small, false, 200, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/send/message", strings.NewReader(c.body))
			if c.hideLength {
				req.ContentLength = -1
				req.Body = io.NopCloser(strings.NewReader(c.body))
			}
			rec := httptest.NewRecorder()
			middleware.MaxBody(c.limit)(decode).ServeHTTP(rec, req)
			if rec.Code != c.want {
				t.Fatalf("status %d, want %d", rec.Code, c.want)
			}
			if c.envelope && rec.Body.String() != tooLargeBody {
				t.Fatalf("body %q, want %q", rec.Body, tooLargeBody)
			}
		})
	}
}

func TestRecoverer(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	h := middleware.Recoverer(log)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("something broke")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/devices?token=hidden", nil))
	if rec.Code != 500 || rec.Body.String() != `{"code":500,"message":"internal error","data":null}` {
		t.Fatalf("%d %q", rec.Code, rec.Body)
	}
	var line map[string]any
	if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
		t.Fatalf("log %q: %v", logs.String(), err)
	}
	if line["level"] != "ERROR" || line["panic"] != "something broke" {
		t.Fatalf("log line %v", line)
	}
	if stack, _ := line["stack"].(string); !strings.Contains(stack, "limits_test.go") {
		t.Fatalf("log line %v", line)
	}
	if strings.Contains(logs.String(), "hidden") {
		t.Fatal("the query reached the log")
	}
}

func TestRecovererAfterHeaders(t *testing.T) {
	t.Parallel()
	h := middleware.Recoverer(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("partial"))
		panic("late")
	}))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusAccepted || rec.Body.String() != "partial" {
		t.Fatalf("%d %q: the answer already sent was changed", rec.Code, rec.Body)
	}
}

func TestRecovererRepanicsAbort(t *testing.T) {
	t.Parallel()
	h := middleware.Recoverer(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic(http.ErrAbortHandler)
	}))
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", v)
		}
	}()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	t.Fatal("no panic")
}

// TestRecovererOverHTTP checks a real server survives a panic and answers
// in the envelope.
func TestRecovererOverHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(middleware.Recoverer(nil)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/boom" {
			panic("boom")
		}
		w.WriteHeader(204)
	})))
	defer srv.Close()
	for _, c := range []struct {
		path string
		want int
	}{{"/boom", 500}, {"/fine", 204}, {"/boom", 500}} {
		resp, err := srv.Client().Get(srv.URL + c.path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.want || (c.want == 500 && resp.Header.Get("Content-Type") != "application/json") {
			t.Fatalf("%s: %d %s", c.path, resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}
}

// TestMaxBodyOverHTTP checks that a client sending a declared-too-large
// body gets the 413 rather than a reset connection.
func TestMaxBodyOverHTTP(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(middleware.MaxBody(0)(ok))
	defer srv.Close()
	for range 3 {
		resp, err := srv.Client().Post(srv.URL+"/send/message", "application/json", strings.NewReader(strings.Repeat("x", 4<<20)))
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 413 || string(raw) != tooLargeBody {
			t.Fatalf("%d %q", resp.StatusCode, raw)
		}
	}
}
