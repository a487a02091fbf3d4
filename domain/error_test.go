package domain_test

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/domain"
)

func TestErrorCodeAndMessage(t *testing.T) {
	t.Parallel()
	cause := errors.New("disk on fire")
	for _, tc := range []struct {
		name        string
		err         error
		code, msg   string
		wrapsCause  bool
		textHasPart string
	}{
		{"nil", nil, "", "internal error", false, ""},
		{"plain error", cause, domain.EINTERNAL, "internal error", false, "disk on fire"},
		{"domain error", domain.Errorf(domain.ENOTFOUND, "device %s not found", "x"), domain.ENOTFOUND, "device x not found", false, "not_found: device x not found"},
		{"wrapped cause", domain.Wrap(domain.EUNAVAILABLE, cause, "WhatsApp unreachable"), domain.EUNAVAILABLE, "WhatsApp unreachable", true, "disk on fire"},
		{"internal hides its message", domain.Wrap(domain.EINTERNAL, cause, "open session"), domain.EINTERNAL, "internal error", true, "open session"},
		{"found through fmt wrapping", fmt.Errorf("handler: %w", domain.Errorf(domain.ECONFLICT, "busy")), domain.ECONFLICT, "busy", false, "busy"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := domain.ErrorCode(tc.err); got != tc.code {
				t.Errorf("ErrorCode = %q, want %q", got, tc.code)
			}
			if got := domain.ErrorMessage(tc.err); got != tc.msg {
				t.Errorf("ErrorMessage = %q, want %q", got, tc.msg)
			}
			if got := errors.Is(tc.err, cause); got != tc.wrapsCause && tc.err != cause {
				t.Errorf("errors.Is(cause) = %v, want %v", got, tc.wrapsCause)
			}
			if tc.err != nil && !strings.Contains(tc.err.Error(), tc.textHasPart) {
				t.Errorf("Error() = %q, want it to contain %q", tc.err.Error(), tc.textHasPart)
			}
		})
	}
}

func TestValidateDeviceID(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 64)
	for id, ok := range map[string]bool{
		"a": true, "phone-1": true, "A.b_c-9": true, long: true, "9": true,
		"": false, long + "a": false, "-a": false, ".a": false, "_a": false,
		"a/b": false, "a b": false, "..": false, "a\x00": false, "é": false,
		"a\n": false, "\na": false, "a:b": false, "a%2F": false,
	} {
		err := domain.ValidateDeviceID(id)
		if (err == nil) != ok {
			t.Errorf("ValidateDeviceID(%q) = %v, want ok %v", id, err, ok)
		}
		if err != nil && err.Error() != "invalid: device_id must match ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$" {
			t.Errorf("ValidateDeviceID(%q): %v", id, err)
		}
		if err != nil && domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("ValidateDeviceID(%q): code %q", id, domain.ErrorCode(err))
		}
	}
}

// The hand-written check agrees with the pattern its message states.
func TestValidateDeviceIDFollowsItsPattern(t *testing.T) {
	t.Parallel()
	pattern := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09._-/ \n\x00é%"
	for range 20000 {
		b := make([]byte, r.IntN(70))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		id := string(b)
		if ok := domain.ValidateDeviceID(id) == nil; ok != pattern.MatchString(id) {
			t.Fatalf("ValidateDeviceID(%q) ok = %v, the pattern says %v", id, ok, !ok)
		}
	}
}
