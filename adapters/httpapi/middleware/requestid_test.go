package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

func TestRequestID(t *testing.T) {
	t.Parallel()
	var seen string
	h := middleware.RequestID()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = middleware.RequestIDFrom(r.Context())
	}))
	ids := map[string]bool{}
	for _, tc := range []struct {
		sent string
		keep bool
	}{
		{"", false},
		{"", false},
		{"proxy-7f3a:42", true},
		{"has space", false},
		{"line\nbreak", false},
		{strings.Repeat("a", 129), false},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		if tc.sent != "" {
			r.Header.Set("X-Request-Id", tc.sent)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		got := w.Header().Get("X-Request-Id")
		if got == "" || got != seen {
			t.Fatalf("sent %q: answered %q, handler saw %q", tc.sent, got, seen)
		}
		if (got == tc.sent) != tc.keep {
			t.Errorf("sent %q, got %q; keep = %v", tc.sent, got, tc.keep)
		}
		if !tc.keep {
			if ids[got] {
				t.Errorf("id %q given twice", got)
			}
			ids[got] = true
		}
	}
}
