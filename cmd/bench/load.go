package main

import (
	"bufio"
	"bytes"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// apiClients is how many keep-alive clients hit the status endpoint.
const apiClients = 64

// loadResult is what a load phase measured.
type loadResult struct {
	n        int
	failed   int
	took     time.Duration
	p50, p99 time.Duration
	lat      []time.Duration // of the 200 answers, sorted
}

// add merges r2, measured in another round, into r.
func (r *loadResult) add(r2 loadResult) {
	r.n += r2.n
	r.failed += r2.failed
	r.took += r2.took
	r.lat = append(r.lat, r2.lat...)
	slices.Sort(r.lat)
	if len(r.lat) > 0 {
		r.p50 = r.lat[len(r.lat)/2]
		r.p99 = r.lat[len(r.lat)*99/100]
	}
}

func (r loadResult) perSecond() float64 { return float64(r.n) / r.took.Seconds() }

// hammer runs workers that each send newReq() in a loop for d, on one
// shared keep-alive transport, and collects latencies of 200 answers.
func hammer(workers int, d time.Duration, newReq func() *http.Request) loadResult {
	client := newLoadClient(workers)
	defer client.CloseIdleConnections()
	return hammerWith(client, workers, d, newReq)
}

// newLoadClient is a client keeping up to workers connections alive.
func newLoadClient(workers int) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, IdleConnTimeout: time.Minute}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// hammerWith is hammer on client, whose connections outlive the round.
func hammerWith(client *http.Client, workers int, d time.Duration, newReq func() *http.Request) loadResult {
	var (
		mu      sync.Mutex
		all     []time.Duration
		failed  atomic.Int64
		wg      sync.WaitGroup
		stopped atomic.Bool
	)
	start := time.Now()
	time.AfterFunc(d, func() { stopped.Store(true) })
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for !stopped.Load() {
				t0 := time.Now()
				resp, err := client.Do(newReq())
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					continue
				}
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	took := time.Since(start)
	slices.Sort(all)
	r := loadResult{n: len(all), failed: int(failed.Load()), took: took, lat: all}
	if len(all) > 0 {
		r.p50 = all[len(all)/2]
		r.p99 = all[len(all)*99/100]
	}
	return r
}

// statusRounds is how many turns the gateway and the bare handler take
// under load, alternately, so that a change in what else runs on the
// machine falls on both sides: many short turns, since on a shared machine
// the load of others changes from one second to the next. Each side keeps
// its 64 connections from turn to turn.
const statusRounds = 16

// statusAPI measures GET /devices/{id}/status with 64 keep-alive clients
// against a bare net/http handler answering the same bytes behind the same
// Basic-auth check, in alternating rounds, and compares throughput, p99
// latency and the server process's CPU time per request.
func (b *bench) statusAPI(g *proc.Gateway) error {
	path := "/devices/" + senderDevice + "/status"
	body, ctype, err := fetch(g, path)
	if err != nil {
		return err
	}
	req := func(base string) func() *http.Request {
		return func() *http.Request {
			r, _ := http.NewRequest("GET", base+path, nil)
			r.SetBasicAuth(benchUser, benchPass)
			return r
		}
	}
	// A device just linked is still at work in the background (whatsmeow
	// generates and uploads 812 prekeys after its first connection, seconds
	// of CPU on this machine): measured then, the gateway's rounds would
	// pay for it.
	t0 := time.Now()
	if !waitIdle(g.PID(), time.Minute) {
		b.log.Warn("the gateway is still busy after a minute; measuring anyway")
	} else {
		b.log.Info("the gateway is idle", "waited", time.Since(t0).Round(time.Millisecond))
	}
	floorURL, floorPID, closeFloor, err := bareServerProcess(body, ctype)
	if err != nil {
		return err
	}
	defer closeFloor()

	round := max(b.cfg.loadTime/statusRounds, 250*time.Millisecond)
	gwClient, flClient := newLoadClient(apiClients), newLoadClient(apiClients)
	defer gwClient.CloseIdleConnections()
	defer flClient.CloseIdleConnections()
	var gw, fl loadResult
	var gwCPU, flCPU time.Duration
	for i := range statusRounds {
		// Who goes first alternates too.
		gwTurn := func() {
			c0 := cpuTime(g.PID())
			gw.add(hammerWith(gwClient, apiClients, round, req(g.URL)))
			gwCPU += cpuTime(g.PID()) - c0
		}
		flTurn := func() {
			c0 := cpuTime(floorPID)
			fl.add(hammerWith(flClient, apiClients, round, req(floorURL)))
			flCPU += cpuTime(floorPID) - c0
		}
		if i%2 == 0 {
			gwTurn()
			flTurn()
		} else {
			flTurn()
			gwTurn()
		}
	}
	if gw.failed > 0 || fl.failed > 0 {
		return fmt.Errorf("failed requests: gateway %d, bare handler %d", gw.failed, fl.failed)
	}
	r := gw.perSecond() / fl.perSecond()
	b.add(row{
		figure: "API: GET /devices/{id}/status, 64 keep-alive clients",
		value:  fmt.Sprintf("%.0f req/s", gw.perSecond()), floor: fmt.Sprintf("%.0f req/s", fl.perSecond()),
		ratio: ratio(gw.perSecond(), fl.perSecond()), goal: "≥ 0.95×", met: yesNo(r >= 0.95),
	})
	b.add(row{
		figure: "API: status latency p50 / p99",
		value:  millis(gw.p50) + " / " + millis(gw.p99), floor: millis(fl.p50) + " / " + millis(fl.p99),
		ratio: "p99 " + ratio(float64(gw.p99), float64(fl.p99)), goal: "p99 ≤ 1.2×",
		met: yesNo(float64(gw.p99) <= 1.2*float64(fl.p99)),
	})
	if gwCPU > 0 && flCPU > 0 {
		perReq := func(cpu time.Duration, n int) float64 { return float64(cpu.Microseconds()) / float64(n) }
		g, f := perReq(gwCPU, gw.n), perReq(flCPU, fl.n)
		b.add(row{
			figure: "API: server CPU per status request (less noisy on a shared machine)",
			value:  fmt.Sprintf("%.1f µs", g), floor: fmt.Sprintf("%.1f µs", f), ratio: ratio(g, f),
		})
	}
	return nil
}

// waitIdle waits until process pid has used less than 5 % of a core in
// each of three half seconds in a row, or until limit has passed; it
// reports whether it went idle.
func waitIdle(pid int, limit time.Duration) bool {
	const window = 500 * time.Millisecond
	quiet := 0
	for end := time.Now().Add(limit); time.Now().Before(end); {
		c0 := cpuTime(pid)
		time.Sleep(window)
		if cpuTime(pid)-c0 < window/20 {
			quiet++
		} else {
			quiet = 0
		}
		if quiet == 3 {
			return true
		}
	}
	return false
}

// cpuTime is the user plus system CPU time process pid has used, from
// /proc (0 where there is none).
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses and may
	// hold spaces: state is field 3, utime 14, stime 15, in clock ticks.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	var utime, stime int64
	if _, err := fmt.Sscan(f[11], &utime); err != nil {
		return 0
	}
	if _, err := fmt.Sscan(f[12], &stime); err != nil {
		return 0
	}
	const tick = 10 * time.Millisecond // USER_HZ is 100 on Linux
	return time.Duration(utime+stime) * tick
}

// fetch returns the exact body and content type the gateway answers.
func fetch(g *proc.Gateway, path string) ([]byte, string, error) {
	req, _ := http.NewRequest("GET", g.URL+path, nil)
	req.SetBasicAuth(benchUser, benchPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		return nil, "", fmt.Errorf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return body, resp.Header.Get("Content-Type"), nil
}

// bareServerProcess runs bareServer in a child process (this binary,
// re-executed with the hidden subcommand "floor-http"), so that it has its
// own runtime and cores to share with the load generator, as the gateway
// does. It returns the child's URL and pid and a function that stops it.
func bareServerProcess(body []byte, ctype string) (string, int, func(), error) {
	self, err := os.Executable()
	if err != nil {
		return "", 0, nil, err
	}
	cmd := exec.Command(self, "floor-http", ctype)
	cmd.Stdin = bytes.NewReader(body)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, nil, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", 0, nil, fmt.Errorf("bare handler child: %w", err)
	}
	return strings.TrimSpace(line), cmd.Process.Pid, stop, nil
}

// floorHTTPMain is the child of bareServerProcess: it serves the body read
// from stdin, prints its URL and runs until killed.
func floorHTTPMain(args []string) error {
	if len(args) != 1 {
		return errors.New("usage: floor-http <content type> < body")
	}
	body, err := io.ReadAll(os.Stdin)
	if err != nil {
		return err
	}
	url, _, err := bareServer(body, args[0])
	if err != nil {
		return err
	}
	fmt.Println(url)
	select {}
}

// bareServer serves body on every path to callers with the bench
// credentials (compared in constant time, as the gateway does), on a
// loopback port. It is the floor of the status endpoint.
func bareServer(body []byte, ctype string) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	unauthorized := []byte(`{"code":401,"message":"Unauthorized","data":null}`)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		uOK := subtle.ConstantTimeCompare([]byte(u), []byte(benchUser))
		pOK := subtle.ConstantTimeCompare([]byte(p), []byte(benchPass))
		w.Header().Set("Content-Type", ctype)
		if !ok || uOK&pOK != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="gowa"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(unauthorized)
			return
		}
		_, _ = w.Write(body)
	})}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// sendWorkers is how many clients send at once.
const sendWorkers = 8

// send measures messages per second through POST /send/message from one
// device to one contact.
func (b *bench) send(g *proc.Gateway) error {
	var seq atomic.Int64
	newReq := func() *http.Request {
		body := fmt.Sprintf(`{"phone":%q,"message":"bench message %d"}`, contactPhone, seq.Add(1))
		r, _ := http.NewRequest("POST", g.URL+"/send/message", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("X-Device-Id", senderDevice)
		r.SetBasicAuth(benchUser, benchPass)
		return r
	}
	res := hammer(sendWorkers, b.cfg.loadTime, newReq)
	if res.failed > 0 {
		return fmt.Errorf("%d sends failed", res.failed)
	}
	b.add(row{
		figure: fmt.Sprintf("Send: POST /send/message to one contact, %d clients", sendWorkers),
		value:  fmt.Sprintf("%.0f msg/s (p50 %s, p99 %s)", res.perSecond(), millis(res.p50), millis(res.p99)),
	})
	return nil
}
