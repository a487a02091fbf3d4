package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// Linking and restoring.
const (
	devicesPerPhone = 4 // WhatsApp allows about four companions per account
	linkWorkers     = 8 // devices linked at once while preparing
	// settle is the wait after all are connected before reading memory:
	// long enough for the gateway to close the databases of idle sessions
	// (after 5 s unused, checked each second), as it does in steady state.
	settle = 8 * time.Second
)

// sizeResult is what one size N measured, gateway and floors.
type sizeResult struct {
	n                int
	startup, restore time.Duration
	gw               memory
	fileRestore      time.Duration // the floor with one store per device
	file             memory
	sharedRestore    time.Duration // the floor with one shared store
	shared           memory
	simRSS           float64 // the simulator process, after the gateway's restore; 0 in process
}

// memory is what a process held after settling.
type memory struct {
	rss, heap, goResident float64 // bytes
	// mapped is the part of the RSS backed by files (the binary's code and
	// data, shared libraries): the rest is anonymous memory, the Go
	// runtime's and SQLite's allocator's.
	mapped float64
	files  int // open file descriptors
	// cpu is the process's CPU time (user and system) from exec until
	// memory was read: the restore and the settling after it.
	cpu time.Duration
}

// scale links devices up to each N in turn, restarts the gateway, times
// the restore and reads its memory, then runs the bare-whatsmeow floor on a
// copy of the same storage folder.
func (b *bench) scale() error {
	dir := filepath.Join(b.tmp, "scale")
	if !b.cfg.inprocSim {
		sim, err := b.startSimulator()
		if err != nil {
			return err
		}
		defer sim.Kill()
		b.sim = sim
		defer func() { b.sim = nil }()
	}
	linked := 0
	var results []sizeResult
	for _, n := range b.cfg.sizes {
		g, _, err := b.start(dir, b.simArgs()...)
		if err != nil {
			return err
		}
		if b.cfg.reuse != "" && linked == 0 {
			ds, err := g.Devices()
			if err != nil {
				g.Kill()
				return err
			}
			if linked = len(ds); linked > n {
				g.Kill()
				return fmt.Errorf("-reuse: %d devices are linked there, more than N = %d", linked, n)
			}
		}
		b.log.Info("linking devices", "from", linked, "to", n)
		t0 := time.Now()
		if err := linkDevices(g, linked, n); err != nil {
			g.Kill()
			return err
		}
		b.log.Info("linked", "devices", n, "took", time.Since(t0).Round(time.Millisecond))
		linked = n
		if err := stop(g); err != nil {
			return err
		}
		copyDir := filepath.Join(b.tmp, fmt.Sprintf("floor-%d", n))
		if err := copyTree(dir, copyDir); err != nil {
			return err
		}

		res := sizeResult{n: n}
		if err := b.restore(dir, &res); err != nil {
			return err
		}
		if !b.cfg.noFloors {
			if res.fileRestore, res.file, err = b.floor(copyDir, res.n, false); err != nil {
				return err
			}
			if res.sharedRestore, res.shared, err = b.floor(copyDir, res.n, true); err != nil {
				return err
			}
		}
		_ = os.RemoveAll(copyDir)
		results = append(results, res)
	}
	b.report(results)
	if b.cfg.profile != "" {
		if err := b.profileRestore(dir, b.cfg.profile); err != nil {
			return err
		}
	}
	if b.sim != nil {
		return stop(b.sim)
	}
	return nil
}

// simArgs are the gateway's flags that attach it to the simulator process,
// if there is one.
func (b *bench) simArgs() []string {
	if b.sim == nil {
		return nil
	}
	return []string{"--simulator", b.sim.URL}
}

// restore restarts the gateway on dir and times it until every device is
// connected, then reads its memory.
func (b *bench) restore(dir string, res *sizeResult) error {
	g, up, err := b.startEnv(dir, b.cfg.gwEnv, b.simArgs()...)
	if err != nil {
		return err
	}
	defer g.Kill()
	res.startup = up
	poll := 20*time.Millisecond + time.Duration(res.n)*200*time.Microsecond
	deadline := time.Now().Add(5 * time.Minute)
	for {
		ds, err := g.Devices()
		if err == nil && countState(ds, api.Connected) == res.n {
			res.restore = time.Since(g.Started)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("restore of %d devices not done in 5 min (%d connected, err %v)", res.n, countState(ds, api.Connected), err)
		}
		time.Sleep(poll)
	}
	time.Sleep(settle)
	rss, err := proc.RSS(g.PID())
	if err != nil {
		return err
	}
	res.gw.rss = float64(rss)
	res.gw.files = openFiles(g.PID())
	res.gw.cpu = cpuTime(g.PID())
	res.gw.mapped = fileBacked(g.PID())
	if b.sim != nil {
		simRSS, err := proc.RSS(b.sim.PID())
		if err != nil {
			return err
		}
		res.simRSS = float64(simRSS)
	}
	if res.gw.heap, err = g.Metric("go_memstats_heap_inuse_bytes"); err != nil {
		b.log.Warn("no heap figure", "err", err)
	}
	sys, err1 := g.Metric("go_memstats_sys_bytes")
	released, err2 := g.Metric("go_memstats_heap_released_bytes")
	if err1 == nil && err2 == nil {
		res.gw.goResident = sys - released
	}
	b.log.Info("restored", "devices", res.n, "took", res.restore.Round(time.Millisecond), "rss", mib(res.gw.rss), "files", res.gw.files, "cpu", res.gw.cpu)
	return stop(g)
}

func countState(ds []api.Device, s api.DeviceState) int {
	n := 0
	for _, d := range ds {
		if d.State == s {
			n++
		}
	}
	return n
}

// floorReport is what the floor child prints, one JSON line per phase.
type floorReport struct {
	Phase      string        `json:"phase"` // "connected", then "memory"
	Clients    int           `json:"clients"`
	Merge      time.Duration `json:"merge,omitempty"` // building the shared store, before the clients start
	RSS        float64       `json:"rss,omitempty"`
	HeapInuse  float64       `json:"heap_inuse,omitempty"`
	GoResident float64       `json:"go_resident,omitempty"` // Go runtime's memory, less what it returned
	Files      int           `json:"files,omitempty"`
	CPU        time.Duration `json:"cpu,omitempty"`
	Mapped     float64       `json:"mapped,omitempty"`
}

// floor runs the bare-whatsmeow child on dir, one store per device or one
// shared store, and times it the same way as the gateway: from exec until
// every client is connected (less the time to build the shared store).
func (b *bench) floor(dir string, n int, shared bool) (time.Duration, memory, error) {
	var took time.Duration
	var mem memory
	self, err := os.Executable()
	if err != nil {
		return 0, mem, err
	}
	args := []string{"floor", "-dir", dir, "-settle", settle.String()}
	if shared {
		args = append(args, "-shared")
	}
	if b.sim != nil {
		args = append(args, "-sim", b.sim.URL)
	}
	cmd := exec.Command(self, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, mem, err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, mem, err
	}
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var r floorReport
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue
		}
		switch r.Phase {
		case "connected":
			took = time.Since(t0) - r.Merge
			if r.Clients != n {
				return 0, mem, fmt.Errorf("the floor connected %d clients, want %d", r.Clients, n)
			}
		case "memory":
			mem = memory{rss: r.RSS, heap: r.HeapInuse, goResident: r.GoResident, files: r.Files, cpu: r.CPU, mapped: r.Mapped}
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return 0, mem, fmt.Errorf("floor child: %w", err)
	}
	b.log.Info("floor", "devices", n, "shared", shared, "took", took.Round(time.Millisecond), "rss", mib(mem.rss), "files", mem.files, "cpu", mem.cpu)
	return took, mem, nil
}

// linkDevices links devices from..to-1 by QR, a few per simulated phone.
func linkDevices(g *proc.Gateway, from, to int) error {
	for p := from / devicesPerPhone; p <= (to-1)/devicesPerPhone; p++ {
		if err := g.CreatePhone(phoneOf(p), "Bench "+strconv.Itoa(p)); err != nil {
			return err
		}
	}
	next := make(chan int)
	errs := make(chan error, linkWorkers)
	var wg sync.WaitGroup
	for range linkWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := g.LinkQR(fmt.Sprintf("dev-%04d", i), phoneOf(i/devicesPerPhone)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	var err error
feed:
	for i := from; i < to; i++ {
		select {
		case next <- i:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

func phoneOf(p int) string { return fmt.Sprintf("6282%08d", p) }

// copyTree copies the regular files under src to dst, keeping modes.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			return os.MkdirAll(target, info.Mode().Perm())
		}
		if !d.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		o, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(o, in); err != nil {
			o.Close()
			return err
		}
		return o.Close()
	})
}

// report adds the restore, start-up, memory and open-file rows.
func (b *bench) report(rs []sizeResult) {
	for _, r := range rs {
		per := r.restore / time.Duration(r.n)
		floorPer := r.fileRestore / time.Duration(r.n)
		row := row{
			figure: fmt.Sprintf("Restore, N = %d (exec → all connected)", r.n),
			value:  fmt.Sprintf("%s (%s/device)", secs(r.restore), millis(per)),
			floor:  fmt.Sprintf("%s (%s/device); shared store %s", secs(r.fileRestore), millis(floorPer), secs(r.sharedRestore)),
			ratio:  ratio(r.restore.Seconds(), r.fileRestore.Seconds()),
		}
		if r.n == 500 {
			row.goal, row.met = "< 2 s", yesNo(r.restore < 2*time.Second)
		}
		b.add(row)
	}
	if len(rs) > 1 {
		lo, hi := rs[0], rs[len(rs)-1]
		growth := (hi.restore.Seconds() / float64(hi.n)) / (lo.restore.Seconds() / float64(lo.n))
		floorGrowth := (hi.fileRestore.Seconds() / float64(hi.n)) / (lo.fileRestore.Seconds() / float64(lo.n))
		b.add(row{
			figure: fmt.Sprintf("Restore: per-device cost at N = %d over N = %d", hi.n, lo.n),
			value:  fmt.Sprintf("%.2f×", growth), floor: fmt.Sprintf("%.2f×", floorGrowth),
			goal: "flat (≤ 1.5×)", met: yesNo(growth <= 1.5),
		})
	}
	for _, r := range rs {
		b.add(row{figure: fmt.Sprintf("Start-up, %d sessions (exec → /health 200)", r.n), value: millis(r.startup)})
	}
	// The memory curve: whole-process RSS ÷ N, beside bare whatsmeow with
	// one store per device and with one store shared by all. The ratio is
	// to the shared store: what keeping one file per account costs.
	where := "simulator in its own process"
	if b.cfg.inprocSim {
		where = "simulator inside"
	}
	for _, r := range rs {
		n := float64(r.n)
		row := row{
			figure: fmt.Sprintf("Memory: RSS per connected device, N = %d (whole gateway process ÷ N; %s)", r.n, where),
			value:  fmt.Sprintf("%s (%s total)", mb(r.gw.rss/n), mib(r.gw.rss)),
			floor:  fmt.Sprintf("one file each %s; one shared store %s", mb(r.file.rss/n), mb(r.shared.rss/n)),
			ratio:  ratio(r.gw.rss, r.shared.rss),
		}
		if r.n == 500 {
			row.goal, row.met = "≤ 0.18 MB", yesNo(r.gw.rss/n <= 0.18e6)
		}
		b.add(row)
	}
	// The slope between sizes: what one more connected device costs, the
	// fixed part of the process (binary, runtime, caches) left out.
	for i := 1; i < len(rs); i++ {
		lo, hi := rs[i-1], rs[i]
		dn := float64(hi.n - lo.n)
		b.add(row{
			figure: fmt.Sprintf("Memory: RSS per added device, N = %d → %d (gateway process)", lo.n, hi.n),
			value:  mb((hi.gw.rss - lo.gw.rss) / dn),
			floor:  fmt.Sprintf("one file each %s; one shared store %s", mb((hi.file.rss-lo.file.rss)/dn), mb((hi.shared.rss-lo.shared.rss)/dn)),
		})
	}
	for _, r := range rs {
		if r.simRSS > 0 {
			b.add(row{
				figure: fmt.Sprintf("Simulator process RSS, N = %d (not in the figures above)", r.n),
				value:  fmt.Sprintf("%s (%s per device)", mib(r.simRSS), mb(r.simRSS/float64(r.n))),
			})
		}
	}
	for _, r := range rs {
		n := float64(r.n)
		b.add(row{
			figure: fmt.Sprintf("Open files per connected device, N = %d", r.n),
			value:  fmt.Sprintf("%.2f (%d total)", float64(r.gw.files)/n, r.gw.files),
			floor:  fmt.Sprintf("one file each %.2f; one shared store %.2f", float64(r.file.files)/n, float64(r.shared.files)/n),
		})
	}
	for _, r := range rs {
		b.add(row{
			figure: fmt.Sprintf("CPU time of the process from exec to the memory reading, N = %d (restore and %s settling)", r.n, settle),
			value:  secs(r.gw.cpu),
			floor:  fmt.Sprintf("one file each %s; one shared store %s", secs(r.file.cpu), secs(r.shared.cpu)),
		})
	}
	// Where the bytes go at the largest N: the Go heap (whatsmeow clients,
	// the simulator's state), the rest of the Go runtime (goroutine stacks,
	// its own structures), and what lies outside the Go runtime: modernc
	// SQLite's allocator (page caches, schemas, WAL indexes) and the binary.
	top := rs[len(rs)-1]
	if top.gw.goResident > 0 && top.file.goResident > 0 {
		n := float64(top.n)
		split := func(m memory) string {
			return fmt.Sprintf("heap %s, other Go %s, outside Go %s (files %s, SQLite and other anonymous %s)", mb(m.heap/n), mb((m.goResident-m.heap)/n),
				mb((m.rss-m.goResident)/n), mb(m.mapped/n), mb(max(0, m.rss-m.goResident-m.mapped)/n))
		}
		b.add(row{
			figure: fmt.Sprintf("Memory per device, N = %d: Go heap / rest of the Go runtime / outside Go (the binary's mapped files; SQLite's allocator)", top.n),
			value:  split(top.gw),
			floor:  "one file each: " + split(top.file) + "; shared: " + split(top.shared),
		})
	}
}

// mb is n bytes in (decimal) megabytes, to two or three places.
func mb(n float64) string {
	if n < 1e6 {
		return fmt.Sprintf("%.3f MB", n/1e6)
	}
	return fmt.Sprintf("%.2f MB", n/1e6)
}
