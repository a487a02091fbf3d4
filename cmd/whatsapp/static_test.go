package main

import (
	"context"
	"debug/elf"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestStaticBinaryRunsFromEmptyRoot proves what the Dockerfile promises
// without a Docker engine: the binary built with the Dockerfile's exact
// flags is static and serves /health, and its own healthcheck passes, when
// run from an otherwise empty root filesystem (a chroot, or a user
// namespace when not root).
func TestStaticBinaryRunsFromEmptyRoot(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	t.Parallel()
	root := t.TempDir()
	bin := filepath.Join(root, "whatsapp")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Fatal("the binary asks for a dynamic loader")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Fatalf("the binary needs shared libraries: %v", libs)
	}
	f.Close()

	args := []string{"/whatsapp", "rest", "--host", "127.0.0.1", "--port", "0", "--storages", "/storages"}
	var cmd *exec.Cmd
	switch {
	case os.Geteuid() == 0:
		cmd = exec.Command("chroot", append([]string{root}, args...)...)
	default:
		if _, err := exec.LookPath("unshare"); err != nil {
			t.Skip("needs root for chroot, or unshare for a user namespace")
		}
		cmd = exec.Command("unshare", append([]string{"-r", "--root", root}, args...)...)
	}
	cmd.Env = []string{} // nothing from this machine
	logs := &syncWriter{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot enter an empty root here: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	// The binary picks its own port (no port picked here, closed and handed
	// over) and logs where it listens.
	var addr string
	eventually(t, 20*time.Second, func() bool {
		if m := listeningAddr.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		}
		select {
		case err := <-exited:
			t.Fatalf("the binary exited in the empty root: %v\n%s", err, logs.String())
		default:
		}
		return addr != ""
	}, "the binary's listening line")
	_, port, _ := net.SplitHostPort(addr)
	url := "http://" + addr + "/health"
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("/health: %d", resp.StatusCode)
			}
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("the binary exited in the empty root: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no /health within 20s: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := healthcheck(context.Background(), []string{"--port", port}, os.Stderr); err != nil {
		t.Fatalf("healthcheck: %v", err)
	}
	if st, err := os.Stat(filepath.Join(root, "storages")); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("storage folder in the empty root: %v %v", st, err)
	}
}

// listeningAddr finds the address in the gateway's "listening" log line.
var listeningAddr = regexp.MustCompile(`"msg":"listening".*?"addr":"([^"]+)"`)
