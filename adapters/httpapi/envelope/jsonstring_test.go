package envelope

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
)

// FuzzAppendString holds both modes to the encoders they stand in for:
// encoding/json for answers, log/slog's JSON handler for the access log.
func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", `"\<>&`, "\b\f\n\r\t", "\u2028\u2029", "\xff\xfe", "a\x00b\x1fc\x7f", "é😀", "\xed\xa0\x80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s, true); !bytes.Equal(got, want) {
			t.Errorf("encoding/json mode, %q:\n got %s\nwant %s", s, got, want)
		}
		var line bytes.Buffer
		slog.New(slog.NewJSONHandler(&line, &slog.HandlerOptions{
			ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
					return slog.Attr{}
				}
				return a
			},
		})).Info("", "v", s)
		// {"msg":"","v":<string>}
		logged := strings.TrimSuffix(strings.TrimPrefix(line.String(), `{"msg":"","v":`), "}\n")
		if got := AppendString(nil, s, false); string(got) != logged {
			t.Errorf("log/slog mode, %q:\n got %s\nwant %s", s, got, logged)
		}
	})
}
