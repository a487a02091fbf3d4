// Package contract holds HTTP exchanges with a gateway to openapi.yaml,
// for the tests that drive gateways (in process, as processes, or several
// replicas): every answer to an operation of the contract must be one the
// operation lists (status, headers, media type and, for JSON, the body,
// nulls included), and a request the contract refuses must not get a 2xx
// or 3xx.
package contract

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/gowa-dev/gowa/api"
)

// Router finds the operation of a request in api.Spec, the document the
// server serves, validated once. It matches on the path alone: test
// gateways listen on loopback ports the document's servers do not name.
var Router = sync.OnceValues(func() (routers.Router, error) {
	doc, err := openapi3.NewLoader().LoadFromData(api.Spec)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	doc.Servers = nil
	return legacy.NewRouter(doc)
})

// Exchange is one request and its answer.
type Exchange struct {
	Request *http.Request
	// RequestBody is the body the server read; nil skips the request's
	// own validation (a client that did not keep it).
	RequestBody []byte
	Status      int
	Header      http.Header
	Body        []byte
	// Truncated says Body is not the whole answer: only its status,
	// headers and media type are checked.
	Truncated bool
}

// Check validates e against the operation route (found by Router) and
// returns what breaks the contract, or "".
func Check(e Exchange, route *routers.Route, params map[string]string) string {
	ctx := context.Background()
	r := e.Request
	what := fmt.Sprintf("%s %s → %d", r.Method, r.URL.RequestURI(), e.Status)
	if len(what) > 200 {
		what = what[:200] + "…"
	}

	req := r.Clone(ctx)
	req.Body = io.NopCloser(bytes.NewReader(e.RequestBody))
	reqInput := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: params,
		Route:      route,
		Options: &openapi3filter.Options{
			// Basic auth is the gateway's own middleware; the answers
			// (401 included) are checked below.
			AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			MultiError:         true,
		},
	}
	reqInput.Options.WithCustomSchemaErrorFunc(shortSchemaError)
	if e.RequestBody != nil {
		if err := openapi3filter.ValidateRequest(ctx, reqInput); err != nil && e.Status < 400 {
			return fmt.Sprintf("%s: the server acted on a request the contract refuses: %v", what, err)
		}
	}

	opts := &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true}
	opts.WithCustomSchemaErrorFunc(shortSchemaError)
	ct := e.Header.Get("Content-Type")
	mediaType, _, _ := mime.ParseMediaType(ct)
	if mediaType != "application/json" || e.Truncated {
		// The YAML document and the Prometheus text are strings to the
		// contract; their status, headers and media type are still checked.
		opts.ExcludeResponseBody = true
		if resp := route.Operation.Responses.Status(e.Status); resp != nil && resp.Value.Content.Get(ct) == nil {
			return fmt.Sprintf("%s: media type %q is not in the contract", what, ct)
		}
	}
	respInput := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: reqInput,
		Status:                 e.Status,
		Header:                 e.Header,
		Body:                   io.NopCloser(bytes.NewReader(e.Body)),
		Options:                opts,
	}
	if err := openapi3filter.ValidateResponse(ctx, respInput); err != nil {
		body := string(e.Body)
		if len(body) > 300 {
			body = body[:300] + "…"
		}
		return fmt.Sprintf("%s: the answer breaks the contract: %v\nanswer: %s", what, err, body)
	}
	return ""
}

// shortSchemaError says what is wrong and where, without kin-openapi's dump
// of the whole schema and value.
func shortSchemaError(err *openapi3.SchemaError) string {
	return fmt.Sprintf("%s (at /%s)", err.Reason, strings.Join(err.JSONPointer(), "/"))
}
