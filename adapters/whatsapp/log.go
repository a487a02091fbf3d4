package whatsapp

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	waLog "go.mau.fi/whatsmeow/util/log"
)

// logger is whatsmeow's waLog.Logger over slog. It keeps secrets out of the
// logs: whatsmeow's Send and Recv modules dump every node at debug level
// (pairing refs, key material, message contents) and its QR emitter prints
// each QR text, so those lines are dropped even in debug mode.
type logger struct {
	log    *slog.Logger
	module string
	debug  bool // pass debug lines at all
	dumps  bool // this module only logs wire dumps at debug level
}

var _ waLog.Logger = logger{}

func newLogger(log *slog.Logger, debug bool) logger {
	return logger{log: log, debug: debug}
}

// Sub returns the logger of a whatsmeow module, named like whatsmeow's own
// ("Client/Socket").
func (l logger) Sub(module string) waLog.Logger {
	sub := l
	if l.module == "" {
		sub.module = module
	} else {
		sub.module = l.module + "/" + module
	}
	sub.dumps = module == "Send" || module == "Recv"
	return sub
}

func (l logger) Debugf(msg string, args ...any) {
	if !l.debug || l.dumps || strings.HasPrefix(msg, "Emitting QR code") {
		return
	}
	l.emit(slog.LevelDebug, msg, args)
}

func (l logger) Infof(msg string, args ...any)  { l.emit(slog.LevelInfo, msg, args) }
func (l logger) Warnf(msg string, args ...any)  { l.emit(slog.LevelWarn, msg, args) }
func (l logger) Errorf(msg string, args ...any) { l.emit(slog.LevelError, msg, args) }

func (l logger) emit(level slog.Level, msg string, args []any) {
	ctx := context.Background()
	if !l.log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{slog.String("component", "whatsmeow")}
	if l.module != "" {
		attrs = append(attrs, slog.String("module", l.module))
	}
	l.log.LogAttrs(ctx, level, fmt.Sprintf(msg, args...), attrs...)
}

// signalLogger is libsignal's process-wide logger over slog. libsignal's
// debug lines are dropped; its info lines are debug detail here.
type signalLogger struct {
	log   *slog.Logger
	debug bool
}

func (l signalLogger) Debug(caller, msg string) {}

func (l signalLogger) Info(caller, msg string) {
	if l.debug {
		l.log.Debug(msg, "caller", caller)
	}
}

func (l signalLogger) Warning(caller, msg string) { l.log.Warn(msg, "caller", caller) }
func (l signalLogger) Error(caller, msg string)   { l.log.Error(msg, "caller", caller) }

// Configure is part of libsignal's interface; the level comes from Options.
func (l signalLogger) Configure(string) {}
