package middleware_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/adapters/httpapi/middleware"
)

func TestParseCredentials(t *testing.T) {
	t.Parallel()
	type cred = middleware.Credential
	for _, c := range []struct {
		name string
		in   string
		want []cred
	}{
		{"empty", "", nil},
		{"blank", "   ", nil},
		{"one pair", "admin:secret", []cred{{"admin", "secret"}}},
		{"three pairs", "admin:secret,user:pass123,api:token456", []cred{{"admin", "secret"}, {"user", "pass123"}, {"api", "token456"}}},
		{"colons in the password", "admin:s3cret:with:colons", []cred{{"admin", "s3cret:with:colons"}}},
		{"password is a colon", "admin::", []cred{{"admin", ":"}}},
		{"spaces around pairs", "  admin:secret , api:token456  ", []cred{{"admin", "secret"}, {"api", "token456"}}},
		{"spaces inside the password kept", "admin:two words", []cred{{"admin", "two words"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := middleware.ParseCredentials(c.in)
			if err != nil {
				t.Fatalf("ParseCredentials(%q): %v", c.in, err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("ParseCredentials(%q) = %v, want %v", c.in, got, c.want)
			}
		})
	}
}

func TestParseCredentialsMalformed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name    string
		in      string
		prefix  string
		is      error
		secrets []string
	}{
		{"no colon", "admin:secret,topsecretvalue", "pair 2: missing ':'", middleware.ErrMissingColon, []string{"topsecretvalue"}},
		{"empty user", ":hunter2", "pair 1: empty user", middleware.ErrEmptyUser, []string{"hunter2"}},
		{"empty password", "a:b,c:d,alice:", "pair 3: empty password", middleware.ErrEmptyPassword, []string{"alice"}},
		{"duplicate user", "admin:first-secret,admin:second-secret", "pair 2: ", middleware.ErrDuplicateUser, []string{"first-secret", "second-secret", "admin"}},
		{"empty pair", "admin:secret,,api:token", "pair 2: empty pair", middleware.ErrEmptyPair, []string{"secret", "token"}},
		{"trailing comma", "admin:secret,", "pair 2: empty pair", middleware.ErrEmptyPair, []string{"secret"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := middleware.ParseCredentials(c.in)
			if err == nil {
				t.Fatalf("ParseCredentials(%q) = %v, want an error", c.in, got)
			}
			if !strings.HasPrefix(err.Error(), c.prefix) {
				t.Errorf("error %q, want it to start with %q", err, c.prefix)
			}
			if !errors.Is(err, c.is) {
				t.Errorf("error %q is not %v", err, c.is)
			}
			for _, s := range c.secrets {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q echoes %q", err, s)
				}
			}
		})
	}
}

func TestCredentialStringHidesPassword(t *testing.T) {
	t.Parallel()
	c := middleware.Credential{User: "admin", Password: "hunter2"}
	if s := c.String(); strings.Contains(s, "hunter2") || !strings.Contains(s, "admin") {
		t.Fatalf("String() = %q", s)
	}
}

func FuzzParseCredentials(f *testing.F) {
	for _, s := range []string{
		"", " ", ",", ":", "::", "a:b", "admin:secret,user:pass123,api:token456",
		"admin:s3cret:with:colons", " a:b , c:d ", "a:b,a:c", "nocolon", ":x", "x:", "a:b,,c:d",
		"ü:ß", "a:b\n,c:d", "\x00:\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		creds, err := middleware.ParseCredentials(s)
		if err != nil {
			if creds != nil {
				t.Fatalf("credentials %v with error %v", creds, err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "pair ") {
				t.Fatalf("error %q does not name the pair", msg)
			}
			// No pair's text, nor any part of it long enough to be a
			// secret, may appear in the message.
			for _, pair := range strings.Split(s, ",") {
				for _, part := range append(strings.SplitN(pair, ":", 2), strings.TrimSpace(pair)) {
					if len(part) >= 4 && strings.Contains(msg, part) && !strings.Contains(fixedErrorText, part) {
						t.Fatalf("error %q echoes %q from %q", msg, part, s)
					}
				}
			}
			return
		}
		seen := map[string]bool{}
		for _, c := range creds {
			if c.User == "" || c.Password == "" || strings.Contains(c.User, ":") {
				t.Fatalf("bad credential %#v from %q", c, s)
			}
			if seen[c.User] {
				t.Fatalf("duplicate user from %q", s)
			}
			seen[c.User] = true
			if !strings.Contains(s, c.User+":"+c.Password) {
				t.Fatalf("credential %#v not in %q", c, s)
			}
		}
	})
}

// fixedErrorText is every word ParseCredentials' errors are made of, so
// that the fuzz target does not mistake one for an echoed secret.
var fixedErrorText = strings.Join([]string{
	"pair 0123456789: ",
	middleware.ErrMissingColon.Error(), middleware.ErrEmptyUser.Error(),
	middleware.ErrEmptyPassword.Error(), middleware.ErrDuplicateUser.Error(),
	middleware.ErrEmptyPair.Error(),
}, "|")
