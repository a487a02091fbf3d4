package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const goodSecret = "0123456789abcdef-cfg"

func TestWebhookConfig(t *testing.T) {
	secretFile := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secretFile, []byte(goodSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		want    []string // webhooks, when no error
		secret  string
		wantErr string
	}{
		{name: "none"},
		{name: "repeated and comma-separated", args: []string{"--webhook", "http://a.test/x,https://b.test/y", "--webhook", "http://c.test", "--webhook-secret", goodSecret},
			want: []string{"http://a.test/x", "https://b.test/y", "http://c.test"}, secret: goodSecret},
		{name: "environment", env: map[string]string{"APP_WEBHOOK": "http://a.test,http://b.test", "APP_WEBHOOK_SECRET": goodSecret},
			want: []string{"http://a.test", "http://b.test"}, secret: goodSecret},
		{name: "flag replaces environment", env: map[string]string{"APP_WEBHOOK": "http://env.test", "APP_WEBHOOK_SECRET": goodSecret},
			args: []string{"--webhook", "http://flag.test"}, want: []string{"http://flag.test"}, secret: goodSecret},
		{name: "secret file", args: []string{"--webhook", "http://a.test", "--webhook-secret-file", secretFile}, want: []string{"http://a.test"}, secret: goodSecret},
		{name: "no secret", args: []string{"--webhook", "http://a.test"}, wantErr: "--webhook needs --webhook-secret"},
		{name: "short secret", args: []string{"--webhook", "http://a.test", "--webhook-secret", "short"}, wantErr: "at least 16 bytes"},
		{name: "not http", args: []string{"--webhook", "ftp://user:pw@a.test/?token=x", "--webhook-secret", goodSecret}, wantErr: "http or https"},
		{name: "both secrets", args: []string{"--webhook", "http://a.test", "--webhook-secret", goodSecret, "--webhook-secret-file", secretFile}, wantErr: "not both"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			cfg, err := loadConfig("rest", tc.args, &bytes.Buffer{})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one saying %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "pw@") || strings.Contains(err.Error(), "token=") || strings.Contains(err.Error(), goodSecret) {
					t.Errorf("the error shows a credential: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(cfg.Webhook, tc.want) || cfg.WebhookSecret != tc.secret {
				t.Errorf("webhooks %q secret %q, want %q %q", cfg.Webhook, cfg.WebhookSecret, tc.want, tc.secret)
			}
		})
	}
}
