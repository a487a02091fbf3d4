// Package domain holds gowa's core types: devices, their states, the events a
// WhatsApp session reports, and the errors every layer returns. It depends on
// the standard library only; the services that use these types live in
// domain/device, and the interfaces they need in ports.
package domain

import (
	"errors"
	"fmt"
)

// Error codes. Each maps to one HTTP status in the HTTP adapter; nothing else
// in the program decides statuses.
const (
	EINVALID     = "invalid"     // the caller's input is malformed
	ENOTFOUND    = "not_found"   // the named thing does not exist
	ECONFLICT    = "conflict"    // the request does not fit the current state
	EUNAVAILABLE = "unavailable" // a dependency (WhatsApp) cannot be reached now
	ETIMEOUT     = "timeout"     // WhatsApp did not answer in time
	EINTERNAL    = "internal"    // a bug or an unexpected failure; details are logged, not shown
)

// Error is a domain error: a code for machines and a message safe to show to
// the API's user. Err, when set, is the underlying cause, kept for logs.
type Error struct {
	Code    string
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Message, e.Err)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error with the given code and a formatted message.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code and message whose cause is err.
func Wrap(code string, err error, message string) *Error {
	return &Error{Code: code, Message: message, Err: err}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) string {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the user-facing message of err: the message of its
// *Error, or "internal error" for anything else, so that internal details
// never reach an API user.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != EINTERNAL {
		return e.Message
	}
	return "internal error"
}
