package gateway

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/wasim"
)

// A gateway may start before its simulator (a compose file starts both at
// once): it waits for the simulator to answer, then trusts its root.
func TestGatewayWaitsForTheSimulator(t *testing.T) {
	// Hold a port, so that the simulator can take it later.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := held.Addr().(*net.TCPAddr).Port
	held.Close() // nothing listens: the gateway's calls are refused

	remote, err := wasim.NewRemote("http://127.0.0.1:" + strconv.Itoa(port))
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close()
	logs := &lineWatch{want: "waiting for the simulator", seen: make(chan struct{})}
	type result struct {
		root [32]byte
		err  error
	}
	done := make(chan result, 1)
	go func() {
		root, err := simulatorRoot(context.Background(), remote, slog.New(slog.NewJSONHandler(logs, nil)))
		done <- result{root, err}
	}()
	select {
	case <-logs.seen:
	case r := <-done:
		t.Fatalf("the gateway did not wait for the simulator: %x, %v", r.root, r.err)
	case <-time.After(60 * time.Second):
		t.Fatal("the gateway never said it waits")
	}

	sim, err := OpenSimulator(SimulatorConfig{Host: "127.0.0.1", Port: port, Dir: t.TempDir()}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- sim.Run(ctx) }()
	defer func() {
		stop()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	}()
	want, _ := sim.CertificateRoot(ctx)
	select {
	case r := <-done:
		if r.err != nil || r.root != want {
			t.Fatalf("root %x, %v; the simulator's is %x", r.root, r.err, want)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the gateway did not get the root once the simulator was up")
	}
}

// lineWatch closes seen when a written line contains want.
type lineWatch struct {
	want string
	seen chan struct{}
	once sync.Once
}

func (w *lineWatch) Write(p []byte) (int, error) {
	if strings.Contains(string(p), w.want) {
		w.once.Do(func() { close(w.seen) })
	}
	return len(p), nil
}
