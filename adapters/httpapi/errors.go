package httpapi

import (
	"errors"
	"log/slog"
	"net/http"
	"strings"

	chimw "github.com/go-chi/chi/v5/middleware"

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
		log.ErrorContext(r.Context(), "request failed", "request_id", chimw.GetReqID(r.Context()),
			"method", r.Method, "path", r.URL.Path, "status", status, "code", code, "err", logText(err))
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
