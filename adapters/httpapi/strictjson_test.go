package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
)

// sent records what reached the device service's Send.
type sent struct {
	oneDevice
	got chan [3]string
}

func (s sent) Send(_ context.Context, id, to, text string) (domain.SentMessage, string, error) {
	s.got <- [3]string{id, to, text}
	return domain.SentMessage{ID: "m1"}, id, nil
}

func TestStrictJSONBodies(t *testing.T) {
	t.Parallel()
	got := make(chan [3]string, 1)
	h := httpapi.NewHandler(httpapi.Config{Devices: sent{got: got}})
	for _, c := range []struct {
		name, body string
		want       string // the message, or "" for a 200
	}{
		{"valid", `{"phone":"628123456789","message":"hi"}`, ""},
		{"unknown field, even null", `{"phone":"628123456789","message":"hi","extra":null}`, `unknown field "extra": expected one of "message", "phone"`},
		{"trailing garbage", `{"phone":"628123456789","message":"hi"} x`, "request body must hold one JSON value; more follows at byte"},
		{"two objects", `{"phone":"1","message":"a"}{"phone":"2","message":"b"}`, "request body must hold one JSON value; more follows at byte"},
		{"duplicate key", `{"phone":"628123456789","phone":"628000000000","message":"hi"}`, `field "phone" appears more than once`},
		{"case-mismatched key", `{"PHONE":"628123456789","message":"hi"}`, `unknown field "PHONE": field names are case-sensitive; did you mean "phone"?`},
		{"unknown field", `{"phone":"628123456789","message":"hi","to":"x"}`, `unknown field "to": expected one of "message", "phone"`},
		{"invalid UTF-8", "{\"phone\":\"628123456789\",\"message\":\"hi \xff\"}", "request body is not valid UTF-8 (at byte 38)"},
		{"wrong type", `{"phone":628123456789,"message":"hi"}`, `field "phone": expected a string, got the number 628123456789`},
		{"not an object", `["628123456789","hi"]`, `request body must be a JSON object, such as {"message": …, "phone": …}`},
		{"broken", `{"phone":"628123456789",`, "request body is not valid JSON: it ends early"},
		{"bad syntax", `{"phone" "x"}`, "request body is not valid JSON: expected colon after object key (at byte 9)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := httptest.NewRequest("POST", "/send/message", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("X-Device-Id", "d1")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			var env struct {
				Code    int
				Message string
			}
			_ = json.Unmarshal(rec.Body.Bytes(), &env)
			if c.want == "" {
				if rec.Code != 200 {
					t.Fatalf("%d %s", rec.Code, rec.Body)
				}
				if g := <-got; g != [3]string{"d1", "628123456789", "hi"} {
					t.Errorf("sent %v", g)
				}
				return
			}
			if rec.Code != 400 || env.Code != 400 || !strings.HasPrefix(env.Message, c.want) {
				t.Errorf("%d %q, want 400 %q", rec.Code, env.Message, c.want)
			}
			for _, goism := range []string{"Go ", "struct", "api.", "json:", "Request.", "unmarshal"} {
				if strings.Contains(env.Message, goism) {
					t.Errorf("message speaks Go (%q): %s", goism, env.Message)
				}
			}
			select {
			case g := <-got:
				t.Errorf("a refused body was acted on: %v", g)
			default:
			}
		})
	}
}

// TestStrictJSONCoversEveryBody: every operation that takes a JSON body
// in openapi.yaml is checked, so a new one cannot slip through leniently.
func TestStrictJSONCoversEveryBody(t *testing.T) {
	t.Parallel()
	spec, err := api.GetSwagger()
	if err != nil {
		t.Fatal(err)
	}
	h := httpapi.NewHandler(httpapi.Config{Devices: oneDevice{}, Sandbox: nil})
	for path, item := range spec.Paths.Map() {
		for method, op := range item.Operations() {
			if op.RequestBody == nil {
				continue
			}
			p := strings.NewReplacer("{device_id}", "d1", "{phone}", "628123456789").Replace(path)
			req := httptest.NewRequest(method, p, strings.NewReader(`{"no_such_field":1}`))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			body, _ := io.ReadAll(rec.Body)
			if rec.Code != http.StatusBadRequest || !strings.Contains(string(body), `unknown field \"no_such_field\"`) {
				t.Errorf("%s %s with an unknown field: %d %s", method, path, rec.Code, body)
			}
		}
	}
}
