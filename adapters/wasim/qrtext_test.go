package wasim

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/domain"
)

func TestParseQR(t *testing.T) {
	key := func(b byte) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(b), 32))) }
	noise, ident, adv := key('n'), key('i'), key('a')
	old := "2@ref," + noise + "," + ident + "," + adv
	for _, tc := range []struct {
		name, text, clientType string
		ok                     bool
	}{
		{"old form", old, "", true},
		{"old form, spaces around", "  " + old + "\n", "", true},
		{"new form", qrURLPrefix + old + ",1", "1", true},
		{"new form, android", qrURLPrefix + old + ",e", "e", true},
		{"new form without the type", qrURLPrefix + old, "", false},
		{"new form, unknown type", qrURLPrefix + old + ",z", "", false},
		{"five fields without the link", old + ",1", "", false},
		{"another link", "https://example.com/#" + old + ",1", "", false},
		{"empty ref", "," + noise + "," + ident + "," + adv, "", false},
		{"short key", "2@ref," + noise + "," + ident + "," + base64.StdEncoding.EncodeToString([]byte("short")), "", false},
		{"not base64", "2@ref," + noise + ",!!!," + adv, "", false},
		{"empty", "", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := parseQR(tc.text)
			if !tc.ok {
				if domain.ErrorCode(err) != domain.EINVALID {
					t.Fatalf("parseQR(%q) = %+v, %v; want EINVALID", tc.text, q, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q.ref != "2@ref" || q.noiseKey[0] != 'n' || q.identity[0] != 'i' || len(q.advSecret) != 32 || string(q.clientType) != tc.clientType {
				t.Fatalf("parseQR: %+v", q)
			}
		})
	}
}
