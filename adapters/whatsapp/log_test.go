package whatsapp

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestLoggerKeepsSecretsOut(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newLogger(base, true).Sub("Client")
	l.Sub("Send").Debugf("%s", "<iq><ref>SECRET-REF</ref></iq>")
	l.Sub("Recv").Debugf("%s", "<pair-device>SECRET-REF</pair-device>")
	l.Sub("QRChannel").Debugf("Emitting QR code %s", "SECRET-QR")
	l.Sub("Socket").Debugf("Frame websocket read pump starting %p", &buf)
	l.Warnf("something odd: %d", 42)
	out := buf.String()
	if strings.Contains(out, "SECRET") {
		t.Errorf("secrets reached the log:\n%s", out)
	}
	for _, want := range []string{"module=Client/Socket", "read pump starting", "something odd: 42", "component=whatsmeow"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestLoggerDropsDebugUnlessAsked(t *testing.T) {
	var buf bytes.Buffer
	base := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	l := newLogger(base, false)
	l.Debugf("noise")
	l.Infof("kept")
	if out := buf.String(); strings.Contains(out, "noise") || !strings.Contains(out, "kept") {
		t.Errorf("log:\n%s", out)
	}
}

func TestDSNEscapesThePath(t *testing.T) {
	got := dsn("/s/628123:12@s.whatsapp.net/a?b#c%d/session.db")
	prefix := "file:/s/628123:12@s.whatsapp.net/a%3Fb%23c%25d/session.db?"
	if !strings.HasPrefix(got, prefix) {
		t.Errorf("dsn = %q, want prefix %q", got, prefix)
	}
	for _, p := range []string{"foreign_keys(1)", "journal_mode(WAL)", "synchronous(NORMAL)", "busy_timeout(5000)"} {
		if !strings.Contains(got, p) {
			t.Errorf("dsn %q lacks %s", got, p)
		}
	}
}

func TestBrowserDisplay(t *testing.T) {
	for in, want := range map[string]string{
		"":                "Chrome (Linux)",
		"GOWA":            "Chrome (GOWA)",
		"Firefox (Linux)": "Firefox (Linux)",
	} {
		if got := browserDisplay(in); got != want {
			t.Errorf("browserDisplay(%q) = %q, want %q", in, got, want)
		}
	}
}
