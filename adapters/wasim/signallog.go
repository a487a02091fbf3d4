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

func (quietSignalLog) Debug(string, string) {}
func (quietSignalLog) Info(string, string)  {}
func (quietSignalLog) Warning(caller, msg string) {
	slog.Debug("libsignal: "+msg, "caller", caller)
}
func (quietSignalLog) Error(caller, msg string) {
	slog.Debug("libsignal: "+msg, "caller", caller, "level", "error")
}
func (quietSignalLog) Configure(string) {}
