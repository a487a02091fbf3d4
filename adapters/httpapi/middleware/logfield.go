package middleware

import (
	"strconv"
	"unicode/utf8"
)

// MaxLogField is how many bytes of a value taken from a request (a path, a
// device id, a user agent) reach a log line or an error message. Requests
// are the attacker's to shape: without a bound, a few requests with a
// megabyte path write megabytes of log.
const MaxLogField = 256

// Bound returns s cut to MaxLogField bytes, on a UTF-8 boundary, with a
// marker giving the original length, such as "/aaaa…[cut: 1048576 bytes]".
// Values within the bound are returned as they are, without copying.
func Bound(s string) string {
	if len(s) <= MaxLogField {
		return s
	}
	cut := MaxLogField
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…[cut: " + strconv.Itoa(len(s)) + " bytes]"
}
