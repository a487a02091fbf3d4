package main

import (
	"context"
	"io"
	"strings"
	"testing"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
)

// Two simulators on one folder would write one world at once: the second
// is refused, naming the folder's setting as given.
func TestSimulatorFolderIsLocked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := gateway.OpenSimulator(gateway.SimulatorConfig{Host: "127.0.0.1", Dir: dir}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, stderr, status := runCLI(t, "simulator", "--host", "127.0.0.1", "--port", "0", "--dir", dir)
	if status != 1 || !strings.Contains(stderr, "in use by another simulator") || !strings.Contains(stderr, "use another --dir") {
		t.Errorf("a second simulator on the folder: exit %d, %q", status, stderr)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := first.Run(ctx); err != nil {
		t.Fatal(err)
	}
}
