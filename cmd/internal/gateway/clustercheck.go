package gateway

import (
	"errors"
	"net/url"
	"strings"
)

// CheckDatabaseURI reports whether s is a --db value: a postgres:// (or
// postgresql://) URI naming a host. The error never shows s, which holds
// a password.
func CheckDatabaseURI(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return errors.New("not a URI (not shown: it may hold a password); write it like postgres://user:pass@host:5432/gowa")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return errors.New("must start with postgres:// (the URI is not shown: it may hold a password)")
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("names no host (the URI is not shown: it may hold a password); write it like postgres://user:pass@host:5432/gowa")
	}
	return nil
}

// CheckAdvertiseURL reports whether s is an --advertise-url value: an
// http or https URL with a host, and nothing the replicas forwarding to it
// would have to guess at (credentials, a query or a fragment). A path is
// kept, for a replica behind a path-routing proxy.
func CheckAdvertiseURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return errors.New("not a URL; write it like http://10.0.0.5:3000")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("must be an http:// or https:// URL, such as http://10.0.0.5:3000")
	case u.Host == "" || u.Hostname() == "":
		return errors.New("names no host; write it like http://10.0.0.5:3000")
	case u.User != nil:
		return errors.New("must not hold credentials: replicas forward the caller's own")
	case u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(s, "?") || strings.HasSuffix(s, "#"):
		return errors.New("must not have a query or fragment")
	}
	if p := u.Port(); p != "" {
		for _, c := range p {
			if c < '0' || c > '9' {
				return errors.New("has a malformed port")
			}
		}
	}
	return nil
}
