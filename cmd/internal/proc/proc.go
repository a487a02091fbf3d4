// Package proc runs the gateway binary as a child process and talks to it
// over raw HTTP, for the benchmarks (cmd/bench) and the fault-injection
// suite (cmd/chaos). Both measure or break the real executable, so nothing
// here links the gateway's packages: only its HTTP contract.
package proc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Build compiles the gateway (github.com/gowa-dev/gowa/cmd/whatsapp) into
// dir and returns the binary's path. It must run inside the module.
func Build(ctx context.Context, dir string) (string, error) {
	bin := filepath.Join(dir, "whatsapp")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/gowa-dev/gowa/cmd/whatsapp")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build the gateway: %w\n%s", err, out)
	}
	return bin, nil
}

// Options say how to start the gateway.
type Options struct {
	Bin string // the binary Build made
	// Simulator starts `whatsapp simulator` instead of the gateway, with
	// Storages as its --dir; Auth does not apply.
	Simulator bool
	Storages  string // --storages
	Auth      string // user:pass for -b; "" leaves the API open
	WorkDir   string // the process's working directory; "" inherits ours
	LogPath   string // where its stderr (JSON logs) goes; "" discards them
	Args      []string
	Env       []string // KEY=value added to ours (less APP_…), such as GOGC
	// Wrap, when set, wraps the transport of the client that talks to the
	// process (a test checks every answer against the contract with it).
	Wrap func(http.RoundTripper) http.RoundTripper
}

// Gateway is a running `whatsapp sandbox` (or `whatsapp simulator`)
// process.
type Gateway struct {
	URL     string
	Storage string
	User    string
	Pass    string
	Started time.Time // just before exec

	cmd    *exec.Cmd
	client *http.Client
	done   chan struct{}
	mu     sync.Mutex
	state  *os.ProcessState
	logf   *os.File
}

// Start execs the gateway in sandbox mode (or the simulator) on a loopback port it picks
// itself (--port 0: no port is picked here, closed and handed over, which
// another process could take in between), and waits until its log says
// where it listens. It does not wait for it to be healthy: see WaitHealthy.
func Start(o Options) (*Gateway, error) {
	args := []string{"sandbox", "--host", "127.0.0.1", "--port", "0", "--storages", o.Storages}
	if o.Simulator {
		args = []string{"simulator", "--host", "127.0.0.1", "--port", "0", "--dir", o.Storages}
	}
	if o.Auth != "" && !o.Simulator {
		args = append(args, "-b", o.Auth)
	}
	args = append(args, o.Args...)
	cmd := exec.Command(o.Bin, args...)
	cmd.Dir = o.WorkDir
	// Keep the parent's APP_… settings out: the flags say everything.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "APP_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, o.Env...)
	g := &Gateway{
		Storage: o.Storages,
		cmd:     cmd,
		done:    make(chan struct{}),
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
			MaxIdleConnsPerHost: 64, IdleConnTimeout: 30 * time.Second,
		}},
	}
	if o.Wrap != nil {
		g.client.Transport = o.Wrap(g.client.Transport)
	}
	g.User, g.Pass, _ = strings.Cut(o.Auth, ":")
	watch := &addrWatch{dst: io.Discard, addr: make(chan string, 1)}
	if o.LogPath != "" {
		var err error
		g.logf, err = os.OpenFile(o.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		watch.dst = g.logf
	}
	cmd.Stderr = watch
	cmd.Stdout = watch
	g.Started = time.Now()
	if err := cmd.Start(); err != nil {
		if g.logf != nil {
			g.logf.Close()
		}
		return nil, fmt.Errorf("start the gateway: %w", err)
	}
	go func() {
		_ = cmd.Wait()
		g.mu.Lock()
		g.state = cmd.ProcessState
		g.mu.Unlock()
		if g.logf != nil {
			g.logf.Close()
		}
		close(g.done)
	}()
	select {
	case addr := <-watch.addr:
		g.URL = "http://" + addr
		return g, nil
	case <-g.done:
		return nil, fmt.Errorf("the gateway exited before it listened (see its log)")
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		<-g.done
		return nil, fmt.Errorf("the gateway did not listen within 2 minutes")
	}
}

// addrWatch passes the gateway's log through to dst, and sends the address
// of its "listening" line on addr, once.
type addrWatch struct {
	dst  io.Writer
	addr chan string

	mu   sync.Mutex
	line []byte
	sent bool
}

var listeningAddr = regexp.MustCompile(`"msg":"listening".*?"addr":"([^"]+)"`)

func (w *addrWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	if !w.sent {
		w.line = append(w.line, p...)
		for {
			i := bytes.IndexByte(w.line, '\n')
			if i < 0 {
				break
			}
			if m := listeningAddr.FindSubmatch(w.line[:i]); m != nil {
				w.addr <- string(m[1])
				w.sent, w.line = true, nil
				break
			}
			w.line = w.line[i+1:]
		}
	}
	w.mu.Unlock()
	return w.dst.Write(p)
}

// PID is the process id.
func (g *Gateway) PID() int { return g.cmd.Process.Pid }

// Exited reports whether the process has ended, and its exit code (-1 when
// a signal killed it).
func (g *Gateway) Exited() (bool, int) {
	select {
	case <-g.done:
		g.mu.Lock()
		defer g.mu.Unlock()
		return true, g.state.ExitCode()
	default:
		return false, 0
	}
}

// WaitHealthy polls GET /health until it answers 200, and returns how long
// after exec that was.
func (g *Gateway) WaitHealthy(within time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(within)
	c := &http.Client{Timeout: time.Second}
	for {
		if done, code := g.Exited(); done {
			return 0, fmt.Errorf("the gateway exited with code %d before it was healthy", code)
		}
		resp, err := c.Get(g.URL + "/health")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return time.Since(g.Started), nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("/health not 200 within %s (last error %v)", within, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// Stop sends SIGTERM and waits up to within for the process to end; it
// kills it after that. It returns the exit code.
func (g *Gateway) Stop(within time.Duration) (int, error) {
	if done, code := g.Exited(); done {
		return code, nil
	}
	_ = g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
		_, code := g.Exited()
		return code, nil
	case <-time.After(within):
		g.Kill()
		return -1, fmt.Errorf("the gateway did not stop within %s after SIGTERM; killed it", within)
	}
}

// Signal sends sig to the process.
func (g *Gateway) Signal(sig os.Signal) error { return g.cmd.Process.Signal(sig) }

// Kill sends SIGKILL and waits for the process to end. Safe to call twice.
func (g *Gateway) Kill() {
	if done, _ := g.Exited(); done {
		return
	}
	_ = g.cmd.Process.Kill()
	<-g.done
}

// Done is closed when the process has ended.
func (g *Gateway) Done() <-chan struct{} { return g.done }

// RSS is the process's resident set size in bytes (VmRSS).
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			fields := strings.Fields(rest)
			if len(fields) < 1 {
				break
			}
			kb, err := strconv.ParseInt(fields[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS in /proc status")
}
