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
	devicesPerPhone = 4               // WhatsApp allows about four companions per account
	linkWorkers     = 8               // devices linked at once while preparing
	settle          = 3 * time.Second // wait after all connected before reading memory
)

// sizeResult is what one size N measured, gateway and floor.
type sizeResult struct {
	n                  int
	startup, restore   time.Duration
	rss, heap          float64
	floorRestore       time.Duration
	floorRSS, floorHep float64
}

// scale links devices up to each N in turn, restarts the gateway, times
// the restore and reads its memory, then runs the bare-whatsmeow floor on a
// copy of the same storage folder.
func (b *bench) scale() error {
	dir := filepath.Join(b.tmp, "scale")
	linked := 0
	var results []sizeResult
	for _, n := range b.cfg.sizes {
		g, _, err := b.start(dir)
		if err != nil {
			return err
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
		if err := b.floor(copyDir, &res); err != nil {
			return err
		}
		_ = os.RemoveAll(copyDir)
		results = append(results, res)
	}
	b.report(results)
	if b.cfg.profile != "" {
		return b.profileRestore(dir, b.cfg.profile)
	}
	return nil
}

// restore restarts the gateway on dir and times it until every device is
// connected, then reads its memory.
func (b *bench) restore(dir string, res *sizeResult) error {
	g, up, err := b.start(dir)
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
	res.rss = float64(rss)
	if res.heap, err = g.Metric("go_memstats_heap_inuse_bytes"); err != nil {
		b.log.Warn("no heap figure", "err", err)
	}
	b.log.Info("restored", "devices", res.n, "took", res.restore.Round(time.Millisecond), "rss", mib(res.rss))
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
	Phase     string  `json:"phase"` // "connected", then "memory"
	Clients   int     `json:"clients"`
	RSS       float64 `json:"rss,omitempty"`
	HeapInuse float64 `json:"heap_inuse,omitempty"`
}

// floor runs the bare-whatsmeow child on dir and times it the same way:
// from exec until every client is connected.
func (b *bench) floor(dir string, res *sizeResult) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "floor", "-dir", dir, "-settle", settle.String())
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return err
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
			res.floorRestore = time.Since(t0)
			if r.Clients != res.n {
				return fmt.Errorf("the floor connected %d clients, want %d", r.Clients, res.n)
			}
		case "memory":
			res.floorRSS, res.floorHep = r.RSS, r.HeapInuse
		}
	}
	_, _ = io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("floor child: %w", err)
	}
	b.log.Info("floor", "devices", res.n, "took", res.floorRestore.Round(time.Millisecond), "rss", mib(res.floorRSS))
	return nil
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

// report adds the restore, start-up and memory rows.
func (b *bench) report(rs []sizeResult) {
	for _, r := range rs {
		per := r.restore / time.Duration(r.n)
		floorPer := r.floorRestore / time.Duration(r.n)
		row := row{
			figure: fmt.Sprintf("Restore, N = %d (exec → all connected)", r.n),
			value:  fmt.Sprintf("%s (%s/device)", secs(r.restore), millis(per)),
			floor:  fmt.Sprintf("%s (%s/device)", secs(r.floorRestore), millis(floorPer)),
			ratio:  ratio(r.restore.Seconds(), r.floorRestore.Seconds()),
		}
		if r.n >= 500 {
			row.goal, row.met = "< 10 s", yesNo(r.restore < 10*time.Second)
		}
		b.add(row)
	}
	if len(rs) > 1 {
		lo, hi := rs[0], rs[len(rs)-1]
		growth := (hi.restore.Seconds() / float64(hi.n)) / (lo.restore.Seconds() / float64(lo.n))
		floorGrowth := (hi.floorRestore.Seconds() / float64(hi.n)) / (lo.floorRestore.Seconds() / float64(lo.n))
		b.add(row{
			figure: fmt.Sprintf("Restore: per-device cost at N = %d over N = %d", hi.n, lo.n),
			value:  fmt.Sprintf("%.2f×", growth), floor: fmt.Sprintf("%.2f×", floorGrowth),
			goal: "flat (≤ 1.5×)", met: yesNo(growth <= 1.5),
		})
	}
	for _, r := range rs {
		b.add(row{figure: fmt.Sprintf("Start-up, %d sessions (exec → /health 200)", r.n), value: millis(r.startup)})
	}
	top := rs[len(rs)-1]
	n := float64(top.n)
	b.add(row{
		figure: fmt.Sprintf("Memory: RSS per connected device, N = %d (whole process ÷ N)", top.n),
		value:  mib(top.rss/n) + fmt.Sprintf(" (%s total)", mib(top.rss)),
		floor:  mib(top.floorRSS/n) + fmt.Sprintf(" (%s total)", mib(top.floorRSS)),
		ratio:  ratio(top.rss, top.floorRSS), goal: "≤ 1.30×", met: yesNo(top.rss <= 1.3*top.floorRSS),
	})
	if top.heap > 0 {
		b.add(row{
			figure: fmt.Sprintf("Memory: Go heap in use per device, N = %d", top.n),
			value:  mib(top.heap/n) + fmt.Sprintf(" (%s total)", mib(top.heap)),
			floor:  mib(top.floorHep/n) + fmt.Sprintf(" (%s total)", mib(top.floorHep)),
			ratio:  ratio(top.heap, top.floorHep),
		})
	}
}
