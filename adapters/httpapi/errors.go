package httpapi

import (
	"errors"
	"log/slog"
	"net/http"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
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
// "internal error" and are logged in full.
func writeError(log *slog.Logger, w http.ResponseWriter, r *http.Request, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		envelope.Error(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	code := domain.ErrorCode(err)
	status, ok := statusOf[code]
	if !ok {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		log.ErrorContext(r.Context(), "request failed", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	envelope.Error(w, status, domain.ErrorMessage(err))
}

// badRequest answers a request the generated code could not decode: broken
// JSON, a wrong type, a malformed parameter.
func badRequest(w http.ResponseWriter, err error) {
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		envelope.Error(w, http.StatusRequestEntityTooLarge, "request body too large")
		return
	}
	envelope.Error(w, http.StatusBadRequest, "invalid request: "+err.Error())
}

// invalid returns an EINVALID error naming field.
func invalid(field, message string) error {
	return domain.Errorf(domain.EINVALID, "%s: %s", field, message)
}
