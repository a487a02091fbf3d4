package domain

import (
	"strings"
)

// The one wording of each phone rule, whichever check failed: a caller
// learns the whole rule from any refusal.
const (
	phoneRule     = "phone: expected an international phone number, 7 to 15 digits with an optional leading + and no leading 0, such as 628123456789"
	recipientRule = phoneRule + ", or a user JID such as 628123456789@" + UserServer
)

// NormalizePhone checks a phone number as the API accepts it (7 to 15
// digits, an optional leading "+", no leading 0) and returns its digits.
func NormalizePhone(s string) (string, error) {
	digits := strings.TrimPrefix(s, "+")
	if len(digits) < 7 || len(digits) > 15 || !allDigits(digits) || digits[0] == '0' {
		return "", Errorf(EINVALID, phoneRule)
	}
	return digits, nil
}

// UserServer is the WhatsApp server of phone-number accounts.
const UserServer = "s.whatsapp.net"

// ParseRecipient accepts a phone number (as NormalizePhone does) or a user
// JID ("628123456789@s.whatsapp.net") and returns the recipient's JID.
// Device JIDs ("…:12@s.whatsapp.net") and other servers (groups,
// newsletters) are refused: the gateway sends one-to-one texts.
func ParseRecipient(s string) (string, error) {
	user, server, isJID := strings.Cut(s, "@")
	if !isJID {
		digits, err := NormalizePhone(s)
		if err != nil {
			return "", Errorf(EINVALID, recipientRule)
		}
		return digits + "@" + UserServer, nil
	}
	if _, err := NormalizePhone(user); server != UserServer || err != nil || strings.HasPrefix(user, "+") {
		return "", Errorf(EINVALID, recipientRule)
	}
	return user + "@" + UserServer, nil
}

// PhoneOfJID returns the phone number part of a JID such as
// "628123456789:12@s.whatsapp.net", or "" when it has none.
func PhoneOfJID(jid string) string {
	user, server, ok := strings.Cut(jid, "@")
	if !ok || server != UserServer {
		return ""
	}
	user, _, _ = strings.Cut(user, ":")
	user, _, _ = strings.Cut(user, ".")
	if !allDigits(user) {
		return ""
	}
	return user
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
