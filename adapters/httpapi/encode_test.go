package httpapi

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/api"
)

// encodeAsGenerated is what the generated response type writes.
func encodeAsGenerated(t testing.TB, status int, message string, d api.Device) []byte {
	rec := httptest.NewRecorder()
	resp := api.GetDeviceStatus200JSONResponse{Code: status, Message: message, Data: d}
	if err := resp.VisitGetDeviceStatusResponse(rec); err != nil {
		t.Fatal(err)
	}
	return rec.Body.Bytes()
}

func TestDeviceAnswerMatchesJSON(t *testing.T) {
	t.Parallel()
	// Adding a field to these types must come with its encoding here.
	for typ, n := range map[reflect.Type]int{
		reflect.TypeFor[api.Device]():         14,
		reflect.TypeFor[api.PairingInfo]():    2,
		reflect.TypeFor[api.DeviceEnvelope](): 3,
	} {
		if typ.NumField() != n {
			t.Fatalf("%s has %d fields, deviceAnswer encodes %d: update appendJSON", typ, typ.NumField(), n)
		}
	}
	str := func(s string) *string { return &s }
	reason := api.RemovedOnPhone
	jakarta := time.FixedZone("WIB", 7*3600)
	devices := []api.Device{
		{},
		{DeviceID: "d1", State: api.Disconnected, CreatedAt: time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC), StateSince: time.Date(2026, 12, 1, 10, 0, 0, 123456789, time.UTC)},
		{
			Connected: true, LoggedIn: true, Sandbox: true, DeviceID: "my-device", State: api.Connected, Reason: &reason,
			Jid: str("628123456789:12@s.whatsapp.net"), Phone: str("628123456789"), Platform: str("android"),
			PushName: str(`Al<i>ce & "Bob" \ ` + "\u2028\x00\x1f\t\n\b\f\x7f\xff é 😀"), LastError: str("stream replaced"),
			CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 600000000, jakarta), StateSince: time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC),
			Pairing: &api.PairingInfo{Method: "qr", ExpiresAt: time.Date(2026, 12, 1, 10, 1, 0, 10, time.UTC)},
		},
	}
	for i, d := range devices {
		want := encodeAsGenerated(t, 200, "OK", d)
		got := (&deviceAnswer{status: 200, message: "OK", device: d}).appendJSON(nil)
		if !bytes.Equal(got, want) {
			t.Errorf("device %d:\n got %s\nwant %s", i, got, want)
		}
	}
	rec := httptest.NewRecorder()
	if err := (&deviceAnswer{status: 200, message: "OK", device: devices[2]}).VisitGetDeviceStatusResponse(rec); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "application/json" || !bytes.Equal(rec.Body.Bytes(), encodeAsGenerated(t, 200, "OK", devices[2])) {
		t.Errorf("written answer differs: %d %v %s", rec.Code, rec.Header(), rec.Body)
	}
}

func TestJSONStringRandom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	buf := make([]byte, 64)
	for range 20000 {
		n := r.IntN(len(buf))
		for i := range n {
			buf[i] = byte(r.IntN(256))
			if r.IntN(3) == 0 {
				buf[i] = byte(r.IntN(128))
			}
		}
		s := string(buf[:n])
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q:\n got %s\nwant %s", s, got, want)
		}
	}
}
