package httpapi

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
)

// statusOf maps a domain error code to its HTTP status. It is the only place
// that does.
var statusOf = map[string]int{
	domain.EINVALID:     http.StatusBadRequest,
	domain.ENOTFOUND:    http.StatusNotFound,
	domain.ECONFLICT:    http.StatusConflict,
	domain.EUNAVAILABLE: http.StatusServiceUnavailable,
	domain.ETIMEOUT:     http.StatusGatewayTimeout,
	domain.EINTERNAL:    http.StatusInternalServerError,
}

// writeError answers err in the envelope. Internal errors show only
// "internal error" and are logged in full. When the caller has already
// hung up, whatever the error, it is a 499, logged at INFO: a hang-up is
// the caller's choice, not a fault of the gateway.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	if answeredAsTransport(w, r, err) {
		return
	}
	code := domain.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		log.LogAttrs(r.Context(), slog.LevelError, "request failed",
			slog.String("method", middleware.Bound(r.Method)),
			slog.String("path", middleware.Bound(r.URL.Path)),
			slog.Int("status", status),
			slog.String("request_id", middleware.RequestIDFrom(r.Context())),
			slog.String("code", code),
			slog.String("err", logText(err)))
	}
	if errors.Is(err, domain.ErrMoving) {
		// Nothing was done: the forwarding edge routes the call again
		// (and takes this mark off).
		w.Header().Set(notHolderHeader, "1")
	}
	envelope.Error(w, status, domain.ErrorMessage(err))
}

// logText is err for the log: the messages along its chain, each once.
// A domain error's Error() starts with its code, so a chain of them reads
// "unavailable: … : unavailable: …"; the code is logged once, apart.
func logText(err error) string {
	var e *domain.Error
	if !errors.As(err, &e) {
		return err.Error()
	}
	text := err.Error()
	if whole := e.Error(); text != whole {
		// Something wrapped the domain error; keep what it said.
		text = strings.TrimSuffix(text, whole)
	} else {
		text = ""
	}
	text += e.Message
	if e.Err != nil {
		text += ": " + logText(e.Err)
	}
	return text
}

// answeredAsTransport answers the failures that come from the connection
// rather than from the request's content: the caller hung up (499), the
// body did not arrive in time (408), the body is too large (413). It tells
// whether it answered.
func answeredAsTransport(w http.ResponseWriter, r *http.Request, err error) bool {
	var tooLarge *http.MaxBytesError
	switch {
	case middleware.IsReadTimeout(err):
		// Checked first: the failed read also ended the request's context.
		w.Header().Set("Connection", "close")
		envelope.Error(w, http.StatusRequestTimeout, "request body not received in time")
	case r.Context().Err() != nil:
		envelope.Error(w, middleware.StatusClientClosedRequest, "client closed the request")
	case errors.As(err, &tooLarge):
		envelope.Error(w, http.StatusRequestEntityTooLarge, "request body too large")
	default:
		return false
	}
	return true
}

// badRequest answers a request the generated code (or strictJSON) could
// not decode, in the API's words: which parameter or field, and what was
// expected, never a Go type.
func badRequest(w http.ResponseWriter, r *http.Request, err error) {
	if answeredAsTransport(w, r, err) {
		return
	}
	envelope.Error(w, http.StatusBadRequest, decodeMessage(err))
}

// decodeMessage words a decoding error of the generated code.
func decodeMessage(err error) string {
	var (
		format    *api.InvalidParamFormatError
		required  *api.RequiredParamError
		header    *api.RequiredHeaderError
		unmarshal *api.UnmarshalingParamError
		many      *api.TooManyValuesForParamError
		syntax    *json.SyntaxError
		typ       *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &format):
		return "parameter " + strconv.Quote(format.ParamName) + " is malformed"
	case errors.As(err, &unmarshal):
		return "parameter " + strconv.Quote(unmarshal.ParamName) + " is malformed"
	case errors.As(err, &required):
		return "parameter " + strconv.Quote(required.ParamName) + " is required"
	case errors.As(err, &header):
		return "header " + header.ParamName + " is required"
	case errors.As(err, &many):
		return "parameter " + strconv.Quote(many.ParamName) + " must be given once"
	case errors.Is(err, io.EOF):
		return "request body is required"
	case errors.As(err, &syntax):
		return "request body is not valid JSON (at byte " + strconv.FormatInt(syntax.Offset, 10) + ")"
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return "request body must be a JSON object"
		}
		return "field " + strconv.Quote(field) + ": expected " + expectedOf(typ) + ", got " + typ.Value
	}
	return "malformed request"
}

// expectedOf words what a field of the type in a json.UnmarshalTypeError
// takes.
func expectedOf(e *json.UnmarshalTypeError) string {
	if e.Type == nil {
		return "another type"
	}
	switch strings.TrimPrefix(e.Type.Kind().String(), "u") {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "int", "int8", "int16", "int32", "int64":
		return "an integer in range"
	}
	return "another type"
}

// invalid returns an EINVALID error naming field.
func invalid(field, message string) error {
	return domain.Errorf(domain.EINVALID, "%s: %s", field, message)
}
