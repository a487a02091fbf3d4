package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/gowa-dev/gowa/domain"
)

// urlList is a repeatable flag whose values may also be comma-separated.
// The first use replaces what the environment gave, so that flags win.
type urlList struct {
	p   *[]string
	set bool
}

func (u *urlList) String() string {
	if u.p == nil {
		return ""
	}
	return strings.Join(*u.p, ",")
}

func (u *urlList) Set(v string) error {
	if !u.set {
		*u.p = nil
		u.set = true
	}
	*u.p = append(*u.p, v)
	return nil
}

// checkWebhooks splits and checks the global webhooks and reads their
// secret: one is required when a webhook is set, and there is no default.
// Errors name the settings as the user gave them, and never show a secret.
func checkWebhooks(cfg *Config) error {
	var urls []string
	for _, v := range cfg.Webhook {
		for u := range strings.SplitSeq(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				urls = append(urls, u)
			}
		}
	}
	cfg.Webhook = urls
	if cfg.WebhookSecretFile != "" {
		if cfg.WebhookSecret != "" {
			return fmt.Errorf("%s and %s: give one, not both", cfg.name("webhook-secret"), cfg.name("webhook-secret-file"))
		}
		b, err := os.ReadFile(cfg.WebhookSecretFile)
		if err != nil {
			return fmt.Errorf("%s: %w", cfg.name("webhook-secret-file"), err)
		}
		cfg.WebhookSecret = strings.TrimRight(string(b), "\r\n")
	}
	if len(urls) == 0 {
		return nil
	}
	if cfg.WebhookSecret == "" {
		return fmt.Errorf("%s needs --webhook-secret or --webhook-secret-file (APP_WEBHOOK_SECRET): deliveries are always signed, and there is no default secret", cfg.name("webhook"))
	}
	if len(cfg.WebhookSecret) < domain.MinWebhookSecret {
		secretName := cfg.name("webhook-secret")
		if cfg.WebhookSecretFile != "" {
			secretName = cfg.name("webhook-secret-file")
		}
		return fmt.Errorf("%s: the secret must be at least %d bytes", secretName, domain.MinWebhookSecret)
	}
	for _, u := range urls {
		if err := domain.ValidateWebhook(domain.Webhook{URL: u, Secret: cfg.WebhookSecret}); err != nil {
			return fmt.Errorf("%s %s: %s", cfg.name("webhook"), redactURL(u), domain.ErrorMessage(err))
		}
	}
	return nil
}

// redactURL drops what may be a credential from a URL shown in an error.
func redactURL(u string) string {
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	if scheme, rest, ok := strings.Cut(u, "://"); ok {
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = rest[at+1:]
		}
		return scheme + "://" + rest
	}
	return u
}
