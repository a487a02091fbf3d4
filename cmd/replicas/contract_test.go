package replicas_test

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/routers"

	"github.com/gowa-dev/gowa/cmd/internal/contract"
)

// Every answer a replica gives these tests is held to openapi.yaml, as
// cmd/whatsapp's end-to-end tests hold the in-process gateway's: forwarded
// answers, 503s of devices between replicas and the shared list included.

// checked wraps a transport so that every answer to an operation of the
// contract is validated against it; breaches fail t.
func checked(t *testing.T) func(http.RoundTripper) http.RoundTripper {
	router, err := contract.Router()
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

// validate holds one answer to the contract; the request's body was sent
// and is not kept, so only the answer is checked.
func validate(r *http.Request, resp *http.Response, body []byte, route *routers.Route, params map[string]string) string {
	return contract.Check(contract.Exchange{Request: r, Status: resp.StatusCode, Header: resp.Header, Body: body}, route, params)
}
