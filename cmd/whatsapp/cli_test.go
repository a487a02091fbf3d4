package main

import (
	"bytes"
	"context"
	"os"
	"runtime"
	"strings"
	"testing"
)

// runCLI runs the command line as main does and returns what it printed
// and its exit status.
func runCLI(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run(context.Background(), args, &out, &errOut)
	status = report(err, &errOut)
	return out.String(), errOut.String(), status
}

func TestHelpListsTheCommands(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		status int
	}{
		{nil, 2}, // bare: the list, and no server
		{[]string{"-h"}, 0},
		{[]string{"--help"}, 0},
		{[]string{"help"}, 0},
	} {
		stdout, stderr, status := runCLI(t, tc.args...)
		if status != tc.status {
			t.Errorf("%q: exit %d, want %d", tc.args, status, tc.status)
		}
		text := stdout
		if tc.status != 0 {
			text = stderr
		}
		for _, cmd := range []string{"rest", "sandbox", "simulator", "healthcheck", "version"} {
			if !strings.Contains(text, "\n  "+cmd+" ") {
				t.Errorf("%q does not list %s:\n%s", tc.args, cmd, text)
			}
		}
	}
	stdout, _, status := runCLI(t, "help", "rest")
	if status != 0 || !strings.Contains(stdout, "-basic-auth") || !strings.Contains(stdout, "-trusted-proxies") {
		t.Errorf("help rest: exit %d\n%s", status, stdout)
	}
	if strings.Contains(stdout, "-simulator") {
		t.Errorf("help rest offers --simulator, which only the sandbox takes:\n%s", stdout)
	}
	stdout, _, status = runCLI(t, "help", "sandbox")
	if status != 0 || !strings.Contains(stdout, "-simulator URL") || !strings.Contains(stdout, "APP_SIMULATOR") {
		t.Errorf("help sandbox: exit %d\n%s", status, stdout)
	}
	stdout, _, status = runCLI(t, "help", "simulator")
	for _, flag := range []string{"-port", "-host", "-dir", "APP_DIR"} {
		if status != 0 || !strings.Contains(stdout, flag) {
			t.Errorf("help simulator lacks %s: exit %d\n%s", flag, status, stdout)
		}
	}
}

func TestVersion(t *testing.T) {
	stdout, stderr, status := runCLI(t, "version")
	if status != 0 || stderr != "" {
		t.Fatalf("exit %d: %s", status, stderr)
	}
	for _, want := range []string{"whatsapp ", "commit ", runtime.Version()} {
		if !strings.Contains(stdout, want) {
			t.Errorf("version lacks %q:\n%s", want, stdout)
		}
	}
	if _, _, status := runCLI(t, "version", "extra"); status != 2 {
		t.Errorf("version with an argument: exit %d", status)
	}
}

// Every mistake in the command line or the environment is one line on
// stderr that names the setting as the user gave it, in our words, and
// exits 2; nothing that may be a secret is repeated.
func TestConfigErrorsAreOneLineNamingTheSetting(t *testing.T) {
	for _, tc := range []struct {
		name   string
		env    map[string]string
		args   []string
		want   string
		secret string
	}{
		{"port in env not a number", map[string]string{"APP_PORT": "abc"}, []string{"rest"}, "whatsapp rest: APP_PORT: not a port", ""},
		{"port in env out of range", map[string]string{"APP_PORT": "99999"}, []string{"rest"}, "whatsapp rest: APP_PORT: 99999 is not a port; use 1 to 65535", ""},
		{"port flag out of range", nil, []string{"rest", "--port", "99999"}, "whatsapp rest: --port: 99999 is not a port; use 1 to 65535", ""},
		{"port flag beats the env", map[string]string{"APP_PORT": "3000"}, []string{"rest", "--port", "70000"}, "whatsapp rest: --port: 70000", ""},
		{"port flag not a number", nil, []string{"rest", "--port", "abc"}, "whatsapp rest: --port: not a port", ""},
		{"port flag without value", nil, []string{"rest", "--port"}, "whatsapp rest: missing value for -port; 'whatsapp rest -h' lists the flags", ""},
		{"negative grace flag", nil, []string{"rest", "--shutdown-grace", "-5s"}, "whatsapp rest: --shutdown-grace: must not be negative", ""},
		{"negative grace env", map[string]string{"APP_SHUTDOWN_GRACE": "-5s"}, []string{"rest"}, "whatsapp rest: APP_SHUTDOWN_GRACE: must not be negative", ""},
		{"grace env not a duration", map[string]string{"APP_SHUTDOWN_GRACE": "soon"}, []string{"rest"}, "whatsapp rest: APP_SHUTDOWN_GRACE: not a duration", ""},
		{"debug env not a boolean", map[string]string{"APP_DEBUG": "maybe"}, []string{"rest"}, "whatsapp rest: APP_DEBUG: not a boolean", ""},
		{"debug flag not a boolean", nil, []string{"rest", "--debug=maybe"}, "whatsapp rest: --debug: not a boolean", ""},
		{"proxies env", map[string]string{"APP_TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip"}, []string{"rest"}, "whatsapp rest: APP_TRUSTED_PROXIES: ", ""},
		{"proxies flag", nil, []string{"rest", "--trusted-proxies", "not-an-ip"}, "whatsapp rest: --trusted-proxies: ", ""},
		{"credentials env", map[string]string{"APP_BASIC_AUTH": "admin:ok-1,no-colon-secret"}, []string{"rest"}, "whatsapp rest: APP_BASIC_AUTH: ", "no-colon-secret"},
		{"credentials flag", nil, []string{"rest", "--basic-auth", "nocolon-secret"}, "whatsapp rest: --basic-auth: ", "nocolon-secret"},
		{"pairs split by a space", nil, []string{"rest", "-b", "admin:pw-one", "ops:pw-two"}, "whatsapp rest: unexpected argument after the flags", "pw-two"},
		{"unknown flag", nil, []string{"rest", "--nope"}, "whatsapp rest: unknown flag -nope; 'whatsapp rest -h' lists the flags", ""},
		{"sandbox says sandbox", nil, []string{"sandbox", "--nope"}, "whatsapp sandbox: unknown flag -nope", ""},
		{"simulator URL not http", nil, []string{"sandbox", "--simulator", "https://127.0.0.1:3100"}, "whatsapp sandbox: --simulator: want an http:// URL", ""},
		{"simulator URL with a path", map[string]string{"APP_SIMULATOR": "http://127.0.0.1:3100/sandbox"}, []string{"sandbox"}, "whatsapp sandbox: APP_SIMULATOR: want only a scheme, host and port", ""},
		{"simulator URL with credentials", nil, []string{"sandbox", "--simulator", "http://admin:pw-eight@127.0.0.1:3100"}, "whatsapp sandbox: --simulator: the simulator takes no credentials", "pw-eight"},
		{"rest takes no simulator", nil, []string{"rest", "--simulator", "http://127.0.0.1:3100"}, "whatsapp rest: unknown flag -simulator", ""},
		{"simulator port", nil, []string{"simulator", "--port", "70000"}, "whatsapp simulator: --port: 70000 is not a port", ""},
		{"simulator port env", map[string]string{"APP_PORT": "x"}, []string{"simulator"}, "whatsapp simulator: APP_PORT: not a port", ""},
		{"simulator empty dir", nil, []string{"simulator", "--dir", ""}, "whatsapp simulator: --dir: must not be empty", ""},
		{"simulator unknown flag", nil, []string{"simulator", "--storages", "x"}, "whatsapp simulator: unknown flag -storages", ""},
		{"malformed flag", nil, []string{"rest", "---b=admin:pw-three"}, "whatsapp rest: malformed flag", "pw-three"},
		{"unknown command", nil, []string{"frobnicate"}, `whatsapp: unknown command "frobnicate"`, ""},
		{"a secret as the command", nil, []string{"admin:pw-four"}, "whatsapp: unknown command (not shown", "pw-four"},
		{"flags before the command", nil, []string{"--port", "3000"}, "whatsapp: the command comes first", ""},
		{"healthcheck port env", map[string]string{"APP_PORT": "abc"}, []string{"healthcheck"}, "whatsapp healthcheck: APP_PORT: not a port", ""},
		{"healthcheck negative timeout", nil, []string{"healthcheck", "--timeout", "-1s"}, "whatsapp healthcheck: --timeout: must not be negative", ""},
		{"webhook without a secret", nil, []string{"rest", "--webhook", "http://127.0.0.1:9/hook"}, "whatsapp rest: --webhook needs --webhook-secret", ""},
		{"webhook env without a secret", map[string]string{"APP_WEBHOOK": "http://127.0.0.1:9/hook"}, []string{"rest"}, "whatsapp rest: APP_WEBHOOK needs --webhook-secret", ""},
		{"webhook secret too short", map[string]string{"APP_WEBHOOK_SECRET": "short-secret-5"}, []string{"rest", "--webhook", "http://127.0.0.1:9/hook"}, "whatsapp rest: APP_WEBHOOK_SECRET: the secret must be at least 16 bytes", "short-secret-5"},
		{"webhook not http", nil, []string{"rest", "--webhook", "ftp://user:pw-five@example.com/x", "--webhook-secret", "0123456789abcdef-6"}, "whatsapp rest: --webhook ftp://example.com/x: url must be", "pw-five"},
		{"webhook secret twice", nil, []string{"rest", "--webhook-secret", "0123456789abcdef-7", "--webhook-secret-file", "/nonexistent"}, "whatsapp rest: --webhook-secret and --webhook-secret-file: give one", "0123456789abcdef-7"},
		{"events max zero", nil, []string{"rest", "--events-max", "0"}, "whatsapp rest: --events-max: must be positive", ""},
		{"events max not a number", nil, []string{"rest", "--events-max", "many"}, "whatsapp rest: --events-max: not a whole number", ""},
		{"webhook timeout env zero", map[string]string{"APP_WEBHOOK_TIMEOUT": "0s"}, []string{"rest"}, "whatsapp rest: APP_WEBHOOK_TIMEOUT: must be positive", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			stdout, stderr, status := runCLI(t, tc.args...)
			if status != 2 {
				t.Errorf("exit %d, want 2", status)
			}
			if stdout != "" {
				t.Errorf("printed on stdout: %q", stdout)
			}
			if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, tc.want) {
				t.Errorf("stderr %q, want one line starting %q", stderr, tc.want)
			}
			for _, internal := range []string{"envconfig", "strconv", "parse error", "invalid syntax", "flag provided but not defined", "Usage"} {
				if strings.Contains(stderr, internal) {
					t.Errorf("stderr shows library internals (%q): %q", internal, stderr)
				}
			}
			if tc.secret != "" && strings.Contains(stderr, tc.secret) {
				t.Errorf("stderr shows the secret %q: %q", tc.secret, stderr)
			}
		})
	}
}

// Only APP_… variables configure the gateway: envconfig's fallback to the
// bare name would read PORT, HOST or DEBUG that platforms and shells set
// for other programs.
func TestOnlyPrefixedVariablesCount(t *testing.T) {
	t.Setenv("PORT", "abc")
	t.Setenv("HOST", "example.invalid")
	t.Setenv("DEBUG", "maybe")
	t.Setenv("OS", "Windows_NT")
	cfg, err := loadConfig("rest", nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 3000 || cfg.Host != "" || cfg.Debug || cfg.OS != "GOWA" {
		t.Errorf("bare variables were read: %+v", cfg)
	}
	t.Setenv("APP_BASIC_AUTH_FILE", "/env/file")
	t.Setenv("APP_TRUSTED_PROXIES", "10.0.0.0/8")
	t.Setenv("APP_HOST", "127.0.0.1")
	cfg, err = loadConfig("rest", nil, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.BasicAuthFile != "/env/file" || cfg.TrustedProxies != "10.0.0.0/8" || cfg.Host != "127.0.0.1" {
		t.Errorf("APP_ variables lost: %+v", cfg)
	}
}

// A failure at run time (here a credentials file that cannot be read) is
// exit 1, and names the setting as given.
func TestRuntimeFailureExitsOne(t *testing.T) {
	missing := t.TempDir() + "/none"
	_, stderr, status := runCLI(t, "rest", "--port", "0", "--host", "127.0.0.1", "--storages", t.TempDir(), "--basic-auth-file", missing)
	if status != 1 || !strings.HasPrefix(stderr, "whatsapp: --basic-auth-file: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", status, stderr)
	}
	t.Setenv("APP_BASIC_AUTH_FILE", missing)
	_, stderr, status = runCLI(t, "rest", "--port", "0", "--host", "127.0.0.1", "--storages", t.TempDir())
	if status != 1 || !strings.HasPrefix(stderr, "whatsapp: APP_BASIC_AUTH_FILE: ") {
		t.Errorf("exit %d, stderr %q", status, stderr)
	}
}

// A storage folder that cannot be made is a runtime failure naming the
// setting that chose it.
func TestStorageFailureNamesTheSetting(t *testing.T) {
	file := t.TempDir() + "/a-file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APP_STORAGES", file+"/storages")
	_, stderr, status := runCLI(t, "rest", "--port", "0", "--host", "127.0.0.1")
	if status != 1 || !strings.HasPrefix(stderr, "whatsapp: APP_STORAGES: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("exit %d, stderr %q", status, stderr)
	}
}
