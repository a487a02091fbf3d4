package api

import (
	"context"
	"net/http"
	"strconv"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
)

// loadSpec parses Spec, the document the server serves, and validates it
// as kin-openapi reads OpenAPI 3.0.
func loadSpec(t *testing.T) *openapi3.T {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(Spec)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.yaml is not valid OpenAPI 3.0: %v", err)
	}
	return doc
}

// The statuses and headers that middleware gives every route are listed on
// every operation, so that an operation added later cannot forget them.
func TestEveryOperationListsTheEdgeStatusesAndHeaders(t *testing.T) {
	doc := loadSpec(t)
	for path, item := range doc.Paths.Map() {
		for method, op := range item.Operations() {
			name := method + " " + path
			public := op.Security != nil && len(*op.Security) == 0
			want := []int{http.StatusForbidden, http.StatusRequestEntityTooLarge, http.StatusRequestHeaderFieldsTooLarge, http.StatusInternalServerError}
			if method != http.MethodGet {
				want = append(want, http.StatusUnsupportedMediaType)
			}
			if !public {
				want = append(want, http.StatusUnauthorized, http.StatusTooManyRequests)
			}
			if op.RequestBody != nil {
				want = append(want, http.StatusBadRequest)
			}
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value.In == openapi3.ParameterInPath || p.Value.Schema.Value.Pattern != "" {
					want = append(want, http.StatusBadRequest)
				}
			}
			for _, status := range want {
				if op.Responses.Status(status) == nil {
					t.Errorf("%s does not list %d", name, status)
				}
			}
			for code, resp := range op.Responses.Map() {
				headers := resp.Value.Headers
				if h := headers["X-Request-Id"]; h == nil || !h.Value.Required {
					t.Errorf("%s %s: X-Request-Id is not a required header", name, code)
				}
				status, _ := strconv.Atoi(code)
				if status == http.StatusUnauthorized && (headers["WWW-Authenticate"] == nil || !headers["WWW-Authenticate"].Value.Required) {
					t.Errorf("%s %s: WWW-Authenticate is not a required header", name, code)
				}
				if status == http.StatusTooManyRequests && (headers["Retry-After"] == nil || !headers["Retry-After"].Value.Required) {
					t.Errorf("%s %s: Retry-After is not a required header", name, code)
				}
				if status == http.StatusServiceUnavailable && headers["Retry-After"] == nil {
					t.Errorf("%s %s: Retry-After is not documented", name, code)
				}
				if status >= 400 && resp.Value.Content.Get("application/json") == nil {
					t.Errorf("%s %s: an error without the JSON envelope", name, code)
				}
			}
		}
	}
}

// A null where the contract allows one passes a strict validator: the
// nullable form must be one OpenAPI 3.0.3 defines (nullable beside type),
// not nullable beside a bare allOf.
func TestNullsTheServerSendsAreValid(t *testing.T) {
	doc := loadSpec(t)
	device := doc.Components.Schemas["Device"].Value
	value := map[string]any{
		"device_id": "d1", "state": "disconnected", "reason": nil, "jid": nil, "phone": nil, "push_name": nil,
		"platform": nil, "logged_in": false, "connected": false, "state_since": "2026-12-01T10:00:00Z",
		"last_error": nil, "pairing": nil, "created_at": "2026-12-01T10:00:00Z", "sandbox": true,
	}
	if err := device.VisitJSON(value); err != nil {
		t.Errorf("a disconnected device with nulls is refused: %v", err)
	}
	value["pairing"] = map[string]any{"method": "qr", "expires_at": "2026-12-01T10:01:00Z"}
	if err := device.VisitJSON(value); err != nil {
		t.Errorf("a pairing device is refused: %v", err)
	}
	value["pairing"] = map[string]any{"method": "qr"}
	if err := device.VisitJSON(value); err == nil {
		t.Error("a pairing without expires_at passes: the schema no longer checks pairing")
	}
}
