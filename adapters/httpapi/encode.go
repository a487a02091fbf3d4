package httpapi

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/adapters/httpapi/envelope"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/domain"
)

// deviceAnswer is a Device in the envelope, encoded by hand: the status
// endpoint is the API's hot path, and encoding/json spent most of its time
// there on reflection and on time.Time's MarshalJSON. It writes exactly the
// bytes the generated response types write (json.Encoder's output, HTML
// escaping and trailing newline included); TestDeviceAnswerMatchesJSON
// holds it to that, field by field.
type deviceAnswer struct {
	status  int
	message string
	device  api.Device
	strings [5]string // what device's optional strings point to (see newDeviceAnswer)
}

// newDeviceAnswer returns st as a Device answer, in one allocation: the
// status endpoint runs it on every request.
func (s *server) newDeviceAnswer(status int, message string, st domain.Status) *deviceAnswer {
	a := &deviceAnswer{status: status, message: message}
	s.fillDevice(&a.device, &a.strings, st)
	return a
}

func (a *deviceAnswer) VisitGetDeviceStatusResponse(w http.ResponseWriter) error { return a.write(w) }
func (a *deviceAnswer) VisitGetDeviceResponse(w http.ResponseWriter) error       { return a.write(w) }

// jsonContentType is shared by every answer rather than allocated for
// each; net/http only reads it.
var jsonContentType = []string{"application/json"}

// answerPool holds the buffers answers are encoded into.
var answerPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 1024)
	return &b
}}

func (a *deviceAnswer) write(w http.ResponseWriter) error {
	_, err := a.writeCounted(w)
	return err
}

// writeCounted writes the answer and returns the body bytes written.
func (a *deviceAnswer) writeCounted(w http.ResponseWriter) (int, error) {
	bp := answerPool.Get().(*[]byte)
	b := a.appendJSON((*bp)[:0])
	w.Header()["Content-Type"] = jsonContentType
	w.WriteHeader(a.status)
	n, err := w.Write(b)
	if cap(b) <= 64<<10 {
		*bp = b
		answerPool.Put(bp)
	}
	return n, err
}

// appendJSON appends the envelope as json.Encoder would write it.
func (a *deviceAnswer) appendJSON(b []byte) []byte {
	d := &a.device
	b = append(b, `{"code":`...)
	b = strconv.AppendInt(b, int64(a.status), 10)
	b = append(b, `,"data":{"connected":`...)
	b = strconv.AppendBool(b, d.Connected)
	b = append(b, `,"created_at":`...)
	b = appendJSONTime(b, d.CreatedAt)
	b = append(b, `,"device_id":`...)
	b = appendJSONString(b, d.DeviceID)
	b = append(b, `,"jid":`...)
	b = appendOptional(b, d.Jid)
	b = append(b, `,"last_error":`...)
	b = appendOptional(b, d.LastError)
	b = append(b, `,"logged_in":`...)
	b = strconv.AppendBool(b, d.LoggedIn)
	b = append(b, `,"pairing":`...)
	if p := d.Pairing; p == nil {
		b = append(b, "null"...)
	} else {
		b = append(b, `{"expires_at":`...)
		b = appendJSONTime(b, p.ExpiresAt)
		b = append(b, `,"method":`...)
		b = appendJSONString(b, string(p.Method))
		b = append(b, '}')
	}
	b = append(b, `,"phone":`...)
	b = appendOptional(b, d.Phone)
	b = append(b, `,"platform":`...)
	b = appendOptional(b, d.Platform)
	b = append(b, `,"push_name":`...)
	b = appendOptional(b, d.PushName)
	b = append(b, `,"reason":`...)
	if d.Reason == nil {
		b = append(b, "null"...)
	} else {
		b = appendJSONString(b, string(*d.Reason))
	}
	b = append(b, `,"sandbox":`...)
	b = strconv.AppendBool(b, d.Sandbox)
	b = append(b, `,"state":`...)
	b = appendJSONString(b, string(d.State))
	b = append(b, `,"state_since":`...)
	b = appendJSONTime(b, d.StateSince)
	b = append(b, `},"message":`...)
	b = appendJSONString(b, a.message)
	return append(b, "}\n"...)
}

func appendOptional(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

// appendJSONTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds, trailing zeros dropped). Times the API answers are within
// years 0 to 9999, where MarshalJSON would fail instead.
func appendJSONTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

// appendJSONString appends s as encoding/json quotes it.
func appendJSONString(b []byte, s string) []byte { return envelope.AppendString(b, s, true) }
