package middleware

import (
	"errors"
	"fmt"
	"strings"
)

// Credential is one user and password allowed through Basic auth.
type Credential struct {
	User     string
	Password string
}

// String shows the user only, so that a Credential printed by mistake
// does not leak its password.
func (c Credential) String() string { return c.User + ":<redacted>" }

// The ways a credential pair can be malformed. Errors from ParseCredentials
// and from reading a credentials file wrap one of these, with the position
// of the pair but never its text.
var (
	ErrMissingColon  = errors.New("missing ':' between user and password")
	ErrEmptyUser     = errors.New("empty user")
	ErrEmptyPassword = errors.New("empty password")
	ErrDuplicateUser = errors.New("user given twice")
	ErrEmptyPair     = errors.New("empty pair")
)

// ParseCredentials parses the --basic-auth value: user:pass pairs separated
// by commas, such as "admin:secret,api:token456". A pair splits at its
// first colon, so a password may contain colons (but a user may not);
// spaces around a pair are ignored. An empty or blank s means no
// credentials and a nil error.
//
// A malformed pair is an error that names its position ("pair 2: missing
// ':' …") and never echoes its text, since the text holds a secret.
func ParseCredentials(s string) ([]Credential, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var creds []Credential
	seen := map[string]bool{}
	for i, pair := range strings.Split(s, ",") {
		c, err := parsePair(strings.TrimSpace(pair))
		if err == nil && seen[c.User] {
			err = ErrDuplicateUser
		}
		if err != nil {
			return nil, fmt.Errorf("pair %d: %w", i+1, err)
		}
		seen[c.User] = true
		creds = append(creds, c)
	}
	return creds, nil
}

// parsePair splits one trimmed user:pass pair.
func parsePair(pair string) (Credential, error) {
	if pair == "" {
		return Credential{}, ErrEmptyPair
	}
	user, pass, ok := strings.Cut(pair, ":")
	switch {
	case !ok:
		return Credential{}, ErrMissingColon
	case user == "":
		return Credential{}, ErrEmptyUser
	case pass == "":
		return Credential{}, ErrEmptyPassword
	}
	return Credential{User: user, Password: pass}, nil
}

// parseCredentialFile parses a credentials file: one user:pass a line,
// blank lines and lines starting with '#' ignored. Errors name the line.
func parseCredentialFile(b []byte) ([]Credential, error) {
	var creds []Credential
	seen := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		c, err := parsePair(line)
		if err == nil && seen[c.User] {
			err = ErrDuplicateUser
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		seen[c.User] = true
		creds = append(creds, c)
	}
	if len(creds) == 0 {
		return nil, errors.New("no credentials in the file")
	}
	return creds, nil
}
