package wasim

import (
	"log/slog"

	signallog "go.mau.fi/libsignal/logger"
)

// libsignal creates its package-wide logger lazily, on first use and
// without synchronisation, so two goroutines signing or decrypting at once
// race on it (the race detector sees it as soon as two simulators or
// clients start together). Installing one before any goroutine exists
// closes that race; its default would also print to stdout.
func init() {
	if signallog.Logger == nil {
		signallog.Logger = quietSignalLog{}
	}
}

// quietSignalLog sends libsignal's warnings and errors to slog's default
// logger at debug level, and drops the rest.
type quietSignalLog struct{}

// Debug drops libsignal's debug messages.
func (quietSignalLog) Debug(string, string) {}

// Info drops libsignal's informational messages.
func (quietSignalLog) Info(string, string) {}

// Warning logs a libsignal warning at debug level.
func (quietSignalLog) Warning(caller, msg string) {
	slog.Debug("libsignal: "+msg, "caller", caller)
}

// Error logs a libsignal error at debug level: the simulator reports the
// failures that matter itself.
func (quietSignalLog) Error(caller, msg string) {
	slog.Debug("libsignal: "+msg, "caller", caller, "level", "error")
}

// Configure ignores libsignal's namespace settings.
func (quietSignalLog) Configure(string) {}
