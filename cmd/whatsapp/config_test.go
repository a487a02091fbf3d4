package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestFlagsWinOverEnvironment(t *testing.T) {
	t.Setenv("APP_PORT", "4000")
	t.Setenv("APP_OS", "FromEnv")
	t.Setenv("APP_BASIC_AUTH", "env:pass")
	t.Setenv("APP_SHUTDOWN_GRACE", "3s")
	cfg, err := loadConfig("rest", []string{"--port", "5000", "-b", "flag:pass"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Port != 5000 || cfg.BasicAuth != "flag:pass" {
		t.Errorf("flags lost: port %d, basic auth %q", cfg.Port, cfg.BasicAuth)
	}
	if cfg.OS != "FromEnv" || cfg.ShutdownGrace != 3*time.Second {
		t.Errorf("environment lost: os %q, grace %s", cfg.OS, cfg.ShutdownGrace)
	}
}

// The console is on unless --ui=false or APP_UI=false turns it off.
func TestConsoleFlag(t *testing.T) {
	for _, tc := range []struct {
		env  string
		args []string
		want bool
	}{
		{"", nil, true},
		{"", []string{"--ui=false"}, false},
		{"false", nil, false},
		{"false", []string{"--ui"}, true},
	} {
		if tc.env != "" {
			t.Setenv("APP_UI", tc.env)
		}
		cfg, err := loadConfig("rest", tc.args, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.UI != tc.want {
			t.Errorf("APP_UI=%q %v: UI %v, want %v", tc.env, tc.args, cfg.UI, tc.want)
		}
	}
	if _, err := loadConfig("rest", []string{"--ui=maybe"}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "--ui: not a boolean") {
		t.Errorf("--ui=maybe: %v", err)
	}
}

func TestSandboxKeepsItsOwnStorage(t *testing.T) {
	for cmd, want := range map[string]string{"rest": defaultStorages, "sandbox": defaultSandboxStorages} {
		cfg, err := loadConfig(cmd, nil, &bytes.Buffer{})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Storages != want {
			t.Errorf("%s stores in %q, want %q", cmd, cfg.Storages, want)
		}
	}
}

// Neither the help text nor a startup error may show a credential.
func TestSecretsStayOutOfHelpAndErrors(t *testing.T) {
	t.Setenv("APP_BASIC_AUTH", "admin:env-secret-1")
	var help bytes.Buffer
	if _, err := loadConfig("rest", []string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("-h: %v", err)
	}
	if strings.Contains(help.String(), "env-secret-1") {
		t.Errorf("help shows the credential from the environment:\n%s", help.String())
	}
	if !strings.Contains(help.String(), "-basic-auth") {
		t.Errorf("help does not list --basic-auth:\n%s", help.String())
	}

	var stderr bytes.Buffer
	err := run(context.Background(), []string{"rest", "--port", "0", "--storages", t.TempDir(), "-b", "admin:flag-secret-2,no-colon-secret-3"}, &bytes.Buffer{}, &stderr)
	if err == nil {
		t.Fatal("a malformed --basic-auth started the server")
	}
	for _, secret := range []string{"flag-secret-2", "no-colon-secret-3"} {
		if strings.Contains(err.Error(), secret) || strings.Contains(stderr.String(), secret) {
			t.Errorf("startup error shows %q: %v\n%s", secret, err, stderr.String())
		}
	}
	if !strings.HasPrefix(err.Error(), "-b: ") {
		t.Errorf("the error does not name the flag as typed: %v", err)
	}
}

func TestBadSettingsStopStartup(t *testing.T) {
	for _, args := range [][]string{
		{"rest", "--port", "70000"},
		{"rest", "--trusted-proxies", "10.0.0.0/8,not-an-ip"},
		{"rest", "--allowed-hosts", "https://gowa.example.com"},
		{"rest", "--basic-auth-file", "/nonexistent/credentials"},
		{"rest", "stray-argument"},
		{"frobnicate"},
	} {
		args := append(args, "--storages", t.TempDir())
		if args[0] == "frobnicate" {
			args = args[:1]
		}
		if err := run(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%q started", args)
		}
	}
}

// A port in use fails after the stores and the simulator were opened: they
// are closed again (goleak, in TestMain, sees a simulator left running), and
// the same folder opens cleanly afterwards.
func TestPortInUseReleasesTheStores(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()
	err = run(context.Background(), []string{"sandbox", "--host", "127.0.0.1", "--port", port, "--storages", dir}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("run on a busy port: %v", err)
	}
	startGateway(t, dir)
}
