package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/api"
)

// requestBodies is the body type of every operation that takes one, by
// method and route. TestRequestBodiesCoverTheSpec keeps it in step with
// openapi.yaml.
var requestBodies = map[string]reflect.Type{
	"POST /devices":                          reflect.TypeFor[api.CreateDeviceJSONRequestBody](),
	"POST /devices/{device_id}/login/code":   reflect.TypeFor[api.LoginCodeJSONRequestBody](),
	"POST /send/message":                     reflect.TypeFor[api.SendMessageJSONRequestBody](),
	"POST /sandbox/phones":                   reflect.TypeFor[api.SandboxCreatePhoneJSONRequestBody](),
	"POST /sandbox/phones/{phone}/scan":      reflect.TypeFor[api.SandboxScanJSONRequestBody](),
	"POST /sandbox/phones/{phone}/link-code": reflect.TypeFor[api.SandboxLinkCodeJSONRequestBody](),
	"POST /sandbox/network":                  reflect.TypeFor[api.SandboxNetworkFaultJSONRequestBody](),
	"PUT /devices/{device_id}/webhook":       reflect.TypeFor[api.PutDeviceWebhookJSONRequestBody](),
	"POST /sandbox/phones/{phone}/send":      reflect.TypeFor[api.SandboxSendJSONRequestBody](),
}

// strictJSON checks a request body before the generated code decodes it
// with encoding/json, which is lenient where a client's mistake should be
// an error: it takes trailing data and a second value, lets the last of
// two equal keys win, matches keys case-insensitively ({"PHONE":…}),
// ignores unknown keys, replaces invalid UTF-8 with U+FFFD, and words its
// errors in Go types. Here a body must be one JSON object, valid UTF-8,
// with each key once, spelled exactly as a field of the operation's body,
// and values of the field's JSON type; anything else is a 400 naming the
// field and what was expected. The body is then handed on unchanged.
//
// It runs as the router's last middleware, before routing: it looks the
// route up itself, and only for requests with a body, so that requests
// without one (the hot path) pay nothing for it.
func strictJSON(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
			next.ServeHTTP(w, r)
			return
		}
		rctx := chi.RouteContext(r.Context())
		if rctx == nil || rctx.Routes == nil {
			next.ServeHTTP(w, r)
			return
		}
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		typ, ok := requestBodies[r.Method+" "+rctx.Routes.Find(chi.NewRouteContext(), r.Method, path)]
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		data, err := io.ReadAll(r.Body)
		if err != nil {
			badRequest(w, r, fmt.Errorf("read body: %w", err))
			return
		}
		if len(data) > 0 {
			if err := checkJSON(data, typ); err != nil {
				envelope.Error(w, http.StatusBadRequest, err.Error())
				return
			}
		}
		r.Body = io.NopCloser(bytes.NewReader(data))
		next.ServeHTTP(w, r)
	})
}

// checkJSON checks data against the rules of strictJSON for a body of
// type typ (a struct). Its errors are the messages clients read.
func checkJSON(data []byte, typ reflect.Type) error {
	if !utf8.Valid(data) {
		return fmt.Errorf("request body is not valid UTF-8 (at byte %d)", invalidUTF8At(data))
	}
	fields := jsonFields(typ)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return syntaxError(err, dec)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("request body must be a JSON object, such as " + example(fields))
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err, dec)
		}
		key := tok.(string) // inside an object, json.Decoder only yields string keys
		if seen[key] {
			return fmt.Errorf("field %q appears more than once", key)
		}
		seen[key] = true
		kind, known := fields[key]
		if !known {
			return unknownField(key, fields)
		}
		var v any
		if err := dec.Decode(&v); err != nil {
			return syntaxError(err, dec)
		}
		if want := kindFits(kind, v); want != "" {
			return fmt.Errorf("field %q: expected %s, got %s", key, want, jsonKind(v))
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return syntaxError(err, dec)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("request body must hold one JSON value; more follows at byte %d", dec.InputOffset())
	}
	return nil
}

// jsonFields maps the JSON names of a struct's fields to their kinds.
func jsonFields(typ reflect.Type) map[string]reflect.Kind {
	fields := map[string]reflect.Kind{}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		t := f.Type
		if t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		fields[name] = t.Kind()
	}
	return fields
}

// kindFits returns "" when v (as decoded with UseNumber) fits a field of
// kind, or else what the field expects. null fits every field: it means
// "not given".
func kindFits(kind reflect.Kind, v any) string {
	if v == nil {
		return ""
	}
	switch kind {
	case reflect.String:
		if _, ok := v.(string); !ok {
			return "a string"
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			return "true or false"
		}
	case reflect.Int, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if !ok {
			return "an integer"
		}
		if _, err := strconv.ParseInt(string(n), 10, 32); err != nil {
			return "an integer between -2147483648 and 2147483647"
		}
	}
	return ""
}

// jsonKind names the JSON type of v.
func jsonKind(v any) string {
	switch v := v.(type) {
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "the number " + middleware.Bound(string(v))
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

// unknownField words an unknown key, pointing at the field it was likely
// meant to be when only its case differs.
func unknownField(key string, fields map[string]reflect.Kind) error {
	key = middleware.Bound(key)
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Errorf("unknown field %q: field names are case-sensitive; did you mean %q?", key, name)
		}
	}
	return fmt.Errorf("unknown field %q: expected %s", key, fieldList(fields))
}

// fieldList is "phone and message", "no fields" and so on.
func fieldList(fields map[string]reflect.Kind) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, strconv.Quote(n))
	}
	sort.Strings(names)
	switch len(names) {
	case 0:
		return "no fields"
	case 1:
		return "only " + names[0]
	}
	return "one of " + strings.Join(names, ", ")
}

// example is an empty object of the fields, for error messages.
func example(fields map[string]reflect.Kind) string {
	names := make([]string, 0, len(fields))
	for n := range fields {
		names = append(names, n)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, n := range names {
		parts[i] = strconv.Quote(n) + ": …"
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// syntaxError words a decoding error of the token walk.
func syntaxError(err error, dec *json.Decoder) error {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("request body is not valid JSON: %s (at byte %d)", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("request body is not valid JSON: it ends early (at byte %d)", dec.InputOffset())
	}
	return fmt.Errorf("request body is not valid JSON (at byte %d)", dec.InputOffset())
}

// invalidUTF8At is the offset of the first byte that is not UTF-8.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, size := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && size == 1 {
			return i
		}
		i += size
	}
	return len(b)
}
