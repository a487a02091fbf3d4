package middleware

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The access log's time is log/slog's: RFC 3339 with nanoseconds, trailing
// zeros dropped, in the time's own zone.
func TestAppendLogTimeIsRFC3339Nano(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	zones := []*time.Location{time.UTC, time.Local, time.FixedZone("WIB", 7*3600), time.FixedZone("", -(3*3600 + 30*60))}
	base := time.Date(2026, 12, 1, 13, 0, 0, 0, time.UTC)
	for i := range 20000 {
		ns := r.Int64N(int64(3 * time.Second))
		switch i % 4 {
		case 0:
			ns -= ns % int64(time.Millisecond) // trailing zeros
		case 1:
			ns -= ns % int64(time.Second) // none
		}
		at := base.Add(time.Duration(ns)).In(zones[r.IntN(len(zones))])
		if got, want := string(appendLogTime(nil, at)), at.Format(time.RFC3339Nano); got != want {
			t.Fatalf("%v: got %s, want %s", at, got, want)
		}
	}
}
