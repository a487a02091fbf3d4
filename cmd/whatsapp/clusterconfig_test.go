package main

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestClusterSettings(t *testing.T) {
	cfg, err := loadConfig("rest", nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DbURI != "" || cfg.LeaseTTL != 15*time.Second {
		t.Errorf("defaults: db set %v, lease TTL %s; want SQLite and 15s", cfg.DbURI != "", cfg.LeaseTTL)
	}

	t.Setenv("APP_DB_URI", "postgres://gowa:env-pw-1@db.internal:5432/gowa")
	t.Setenv("APP_ADVERTISE_URL", "http://10.0.0.5:3000")
	t.Setenv("APP_LEASE_TTL", "9s")
	cfg, err = loadConfig("rest", nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DbURI != "postgres://gowa:env-pw-1@db.internal:5432/gowa" || cfg.AdvertiseURL != "http://10.0.0.5:3000" || cfg.LeaseTTL != 9*time.Second {
		t.Errorf("environment lost: advertise %q, lease TTL %s", cfg.AdvertiseURL, cfg.LeaseTTL)
	}
	cfg, err = loadConfig("rest", []string{"--db", "postgresql://u:flag-pw-2@other/gowa", "--advertise-url", "https://gowa-1.internal:8443/", "--lease-ttl", "1s"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(cfg.DbURI, "flag-pw-2") || cfg.AdvertiseURL != "https://gowa-1.internal:8443/" || cfg.LeaseTTL != time.Second {
		t.Errorf("flags lost: advertise %q, lease TTL %s", cfg.AdvertiseURL, cfg.LeaseTTL)
	}
}

// Each mistake is one line naming the setting as the user gave it, and no
// error ever shows the database URI's password.
func TestClusterSettingsRefused(t *testing.T) {
	const pw = "s3cret-pw"
	for _, tc := range []struct {
		env  map[string]string
		args []string
		want string
	}{
		{nil, []string{"--db", "postgres://u:" + pw + "@h/db"}, "--db needs --advertise-url"},
		{map[string]string{"APP_DB_URI": "postgres://u:" + pw + "@h/db"}, nil, "APP_DB_URI needs --advertise-url"},
		{nil, []string{"--db", "mysql://u:" + pw + "@h/db", "--advertise-url", "http://h:3000"}, "--db: must start with postgres://"},
		{map[string]string{"APP_DB_URI": "postgres://u:" + pw + "@/db"}, []string{"--advertise-url", "http://h:3000"}, "APP_DB_URI: names no host"},
		{nil, []string{"--db", "postgres://u:" + pw + "@h:bad/db", "--advertise-url", "http://h:3000"}, "--db: not a URI"},
		{nil, []string{"--db", "postgres://u:" + pw + "@h/db", "--advertise-url", "10.0.0.5:3000"}, "--advertise-url: not a URL"},
		{nil, []string{"--db", "postgres://u:" + pw + "@h/db", "--advertise-url", "ftp://h:3000"}, "--advertise-url: must be an http:// or https:// URL"},
		{nil, []string{"--db", "postgres://u:" + pw + "@h/db", "--advertise-url", "http://a:b@h:3000"}, "--advertise-url: must not hold credentials"},
		{nil, []string{"--db", "postgres://u:" + pw + "@h/db", "--advertise-url", "http://h:3000/?x=1"}, "--advertise-url: must not have a query"},
		{map[string]string{"APP_ADVERTISE_URL": "http://h:3000"}, nil, "APP_ADVERTISE_URL: only used with --db"},
		{nil, []string{"--lease-ttl", "500ms"}, "--lease-ttl: must be at least 1s"},
		{map[string]string{"APP_LEASE_TTL": "0s"}, nil, "APP_LEASE_TTL: must be at least 1s"},
		{map[string]string{"APP_LEASE_TTL": "soon"}, nil, "APP_LEASE_TTL: not a duration"},
		{nil, []string{"--lease-ttl", "-5s"}, "--lease-ttl: must not be negative"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := loadConfig("rest", tc.args, &bytes.Buffer{})
			if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
				t.Errorf("%v %v: %v, want %q…", tc.env, tc.args, err, tc.want)
			}
			if err != nil && (strings.Contains(err.Error(), pw) || strings.Contains(err.Error(), "\n")) {
				t.Errorf("%v %v: the error shows the password or takes several lines: %v", tc.env, tc.args, err)
			}
		})
	}
}

// -h lists the cluster flags without showing the URI the environment set.
func TestClusterHelpHidesTheURI(t *testing.T) {
	t.Setenv("APP_DB_URI", "postgres://u:help-pw-3@h/db")
	var help bytes.Buffer
	_, _ = loadConfig("rest", []string{"-h"}, &help)
	if strings.Contains(help.String(), "help-pw-3") {
		t.Errorf("help shows the database URI:\n%s", help.String())
	}
	for _, f := range []string{"-db", "-advertise-url", "-lease-ttl", "APP_DB_URI"} {
		if !strings.Contains(help.String(), f) {
			t.Errorf("help does not mention %s", f)
		}
	}
}
