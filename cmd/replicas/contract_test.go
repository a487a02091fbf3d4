package replicas_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/gowa-dev/gowa/api"
)

// Every answer a replica gives these tests is held to openapi.yaml, as
// cmd/whatsapp's end-to-end tests hold the in-process gateway's: forwarded
// answers, 503s of devices between replicas and the shared list included.

var contractRouter = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, err
	}
	doc.Servers = nil // loopback ports the document does not list
	return legacy.NewRouter(doc)
})

// checked wraps a transport so that every answer to an operation of the
// contract is validated against it; breaches fail t.
func checked(t *testing.T) func(http.RoundTripper) http.RoundTripper {
	router, err := contractRouter()
	if err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	var mu sync.Mutex
	done := false
	t.Cleanup(func() {
		mu.Lock()
		done = true
		mu.Unlock()
	})
	return func(next http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := next.RoundTrip(r)
			if err != nil {
				return resp, err
			}
			route, params, ferr := router.FindRoute(r)
			if ferr != nil {
				return resp, nil // not an operation of the contract
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			if rerr != nil {
				return resp, nil
			}
			if msg := validate(r, resp, body, route, params); msg != "" {
				mu.Lock()
				if !done {
					t.Errorf("contract: %s", msg)
				}
				mu.Unlock()
			}
			return resp, nil
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func validate(r *http.Request, resp *http.Response, body []byte, route *routers.Route, params map[string]string) string {
	ctx := context.Background()
	mediaType, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	if mediaType != "application/json" {
		opts.ExcludeResponseBody = true
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{
			Request: r, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		},
		Status:  resp.StatusCode,
		Header:  resp.Header,
		Body:    io.NopCloser(bytes.NewReader(body)),
		Options: opts,
	}
	if err := openapi3filter.ValidateResponse(ctx, in); err != nil {
		b := string(body)
		if len(b) > 300 {
			b = b[:300] + "…"
		}
		return fmt.Sprintf("%s %s → %d %s: %v", r.Method, r.URL.RequestURI(), resp.StatusCode, b, err)
	}
	return ""
}
