// Package envelope writes gowa's JSON answers. Every answer, errors
// included, is {"code": <HTTP status>, "message": "…", "data": …}, and this
// is the one place that writes it.
package envelope

import (
	"encoding/json"
	"net/http"
)

// Body is the shape of every JSON answer.
type Body struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Data    any    `json:"data"`
}

// Marshal is the envelope around data as JSON, or the 500 envelope if
// data cannot be encoded.
func Marshal(status int, message string, data any) []byte {
	b, err := json.Marshal(Body{Code: status, Message: message, Data: data})
	if err != nil {
		return []byte(`{"code":500,"message":"internal error","data":null}`)
	}
	return b
}

// Write writes status and the envelope around data.
func Write(w http.ResponseWriter, status int, message string, data any) {
	b, err := json.Marshal(Body{Code: status, Message: message, Data: data})
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"code":500,"message":"internal error","data":null}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// Error writes an error envelope with null data.
func Error(w http.ResponseWriter, status int, message string) {
	Write(w, status, message, nil)
}

// Unauthorized writes exactly {"code":401,"message":"Unauthorized","data":null}
// with a Basic challenge for realm.
func Unauthorized(w http.ResponseWriter, realm string) {
	w.Header().Set("WWW-Authenticate", `Basic realm="`+realm+`", charset="UTF-8"`)
	Error(w, http.StatusUnauthorized, "Unauthorized")
}
