package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// buildInfo is what the binary knows of its own build: the module version,
// the VCS commit and whether the tree had local changes, and the Go
// version. Fields the build did not record are "unknown".
type buildInfo struct {
	Version, Commit, Time, GoVersion string
	Modified                         bool
}

// readBuildInfo reads buildInfo from debug.ReadBuildInfo. The commit is
// stamped by `go build` in a git checkout (make build does so); `go run`
// and builds with -buildvcs=false have none.
func readBuildInfo() buildInfo {
	b := buildInfo{Version: "unknown", Commit: "unknown", GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	if v := info.Main.Version; v != "" {
		b.Version = v
	}
	if info.GoVersion != "" {
		b.GoVersion = info.GoVersion
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.Commit = s.Value
		case "vcs.time":
			b.Time = s.Value
		case "vcs.modified":
			b.Modified = s.Value == "true"
		}
	}
	return b
}

// printVersion prints the `whatsapp version` report.
func printVersion(w io.Writer) error {
	b := readBuildInfo()
	commit := b.Commit
	if b.Time != "" {
		commit += " (" + b.Time + ")"
	}
	if b.Modified {
		commit += " with local changes"
	}
	_, err := fmt.Fprintf(w, "whatsapp %s\ncommit   %s\ngo       %s %s/%s\n", b.Version, commit, b.GoVersion, runtime.GOOS, runtime.GOARCH)
	return err
}
