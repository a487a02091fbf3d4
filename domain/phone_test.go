package domain_test

import (
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/domain"
)

func TestNormalizePhone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"628123456789", "628123456789"},
		{"+628123456789", "628123456789"},
		{"1234567", "1234567"},                 // 7 digits, the shortest
		{"123456789012345", "123456789012345"}, // 15 digits, the longest
		{"+123456789012345", "123456789012345"},
		{"123456", ""},
		{"1234567890123456", ""},
		{"", ""},
		{"+", ""},
		{"++628123456789", ""},
		{"0812345678", ""}, // national format
		{"+0812345678", ""},
		{"62 812345678", ""},
		{"62-812345678", ""},
		{"(62)812345678", ""},
		{"628123456789 ", ""},
		{" 628123456789", ""},
		{"62812345678a", ""},
		{"６２８１２３４５６７８９", ""}, // full-width digits
		{"628123456789@s.whatsapp.net", ""},
	} {
		got, err := domain.NormalizePhone(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("NormalizePhone(%q) = %q, want an error", tc.in, got)
			} else if code := domain.ErrorCode(err); code != domain.EINVALID {
				t.Errorf("NormalizePhone(%q): code %q, want invalid", tc.in, code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NormalizePhone(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseRecipient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"628123456789", "628123456789@s.whatsapp.net"},
		{"+628123456789", "628123456789@s.whatsapp.net"},
		{"628123456789@s.whatsapp.net", "628123456789@s.whatsapp.net"},
		{"+628123456789@s.whatsapp.net", ""},
		{"628123456789:12@s.whatsapp.net", ""}, // a device, not a user
		{"628123456789.0:12@s.whatsapp.net", ""},
		{"120363025246125486@g.us", ""},
		{"628123456789@lid", ""},
		{"628123456789@", ""},
		{"@s.whatsapp.net", ""},
		{"628123456789@s.whatsapp.net@s.whatsapp.net", ""},
		{"0812345678@s.whatsapp.net", ""},
		{"123@s.whatsapp.net", ""},
		{"abc@s.whatsapp.net", ""},
		{"123", ""},
		{"", ""},
	} {
		got, err := domain.ParseRecipient(tc.in)
		if tc.want == "" {
			if err == nil {
				t.Errorf("ParseRecipient(%q) = %q, want an error", tc.in, got)
			} else if code := domain.ErrorCode(err); code != domain.EINVALID {
				t.Errorf("ParseRecipient(%q): code %q, want invalid", tc.in, code)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRecipient(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestPhoneOfJID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"628123456789:12@s.whatsapp.net", "628123456789"},
		{"628123456789@s.whatsapp.net", "628123456789"},
		{"628123456789.0:12@s.whatsapp.net", "628123456789"},
		{"628123456789:12@lid", ""},
		{"120363025246125486@g.us", ""},
		{"628123456789", ""},
		{"abc:1@s.whatsapp.net", ""},
		{":1@s.whatsapp.net", ""},
		{"", ""},
	} {
		if got := domain.PhoneOfJID(tc.in); got != tc.want {
			t.Errorf("PhoneOfJID(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// FuzzParseRecipient checks ParseRecipient's promise on any input: it never
// panics, and whatever it accepts is the user JID of 7 to 15 digits that
// does not start with 0, which NormalizePhone and PhoneOfJID agree on.
func FuzzParseRecipient(f *testing.F) {
	for _, s := range []string{
		"628123456789", "+628123456789", "628123456789@s.whatsapp.net",
		"628123456789:12@s.whatsapp.net", "120363025246125486@g.us", "@", "+", "",
		"0812345678", "1234567", "123456789012345", "1234567890123456", "+@s.whatsapp.net",
		"62812345678\x00", "６２８１２３４５６７８９",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		jid, err := domain.ParseRecipient(in)
		if err != nil {
			if code := domain.ErrorCode(err); code != domain.EINVALID {
				t.Fatalf("ParseRecipient(%q): code %q, want invalid", in, code)
			}
			if jid != "" {
				t.Fatalf("ParseRecipient(%q) returned %q with an error", in, jid)
			}
			return
		}
		user, ok := strings.CutSuffix(jid, "@"+domain.UserServer)
		if !ok {
			t.Fatalf("ParseRecipient(%q) = %q, not a user JID", in, jid)
		}
		if len(user) < 7 || len(user) > 15 || user[0] == '0' || strings.Trim(user, "0123456789") != "" {
			t.Fatalf("ParseRecipient(%q) = %q: user part is not 7 to 15 digits", in, jid)
		}
		if got := domain.PhoneOfJID(jid); got != user {
			t.Fatalf("PhoneOfJID(%q) = %q, want %q", jid, got, user)
		}
		if digits, err := domain.NormalizePhone(user); err != nil || digits != user {
			t.Fatalf("NormalizePhone(%q) = %q, %v; disagrees with ParseRecipient", user, digits, err)
		}
		// Accepting is idempotent: the JID parses to itself.
		if again, err := domain.ParseRecipient(jid); err != nil || again != jid {
			t.Fatalf("ParseRecipient(%q) = %q, %v; want it unchanged", jid, again, err)
		}
	})
}

// TestPhoneRuleOneWording: whichever check fails, a caller reads the same
// message for the same rule.
func TestPhoneRuleOneWording(t *testing.T) {
	t.Parallel()
	messages := map[string]bool{}
	for _, in := range []string{"", "123", "0812345678", "+0812345678", "62812345678901234", "62-812-3456", "abc"} {
		_, err := domain.NormalizePhone(in)
		messages[domain.ErrorMessage(err)] = true
	}
	if len(messages) != 1 {
		t.Errorf("NormalizePhone answers %d wordings: %v", len(messages), messages)
	}
	recipients := map[string]bool{}
	for _, in := range []string{"123", "0812345678", "628123456789@g.us", "+628123456789@s.whatsapp.net", "62812:1@s.whatsapp.net", "x@s.whatsapp.net"} {
		_, err := domain.ParseRecipient(in)
		recipients[domain.ErrorMessage(err)] = true
	}
	if len(recipients) != 1 {
		t.Errorf("ParseRecipient answers %d wordings: %v", len(recipients), recipients)
	}
}
