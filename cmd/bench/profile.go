package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
	"github.com/gowa-dev/gowa/domain"
)

// profileRestore restores a copy of dir in this process, wired by the
// gateway's own wiring (cmd/internal/gateway) without its HTTP server (the
// gateway binary serves no pprof), with a CPU profile from
// start until every device is connected and a heap profile after settling.
// It writes out/cpu.pprof and out/heap.pprof, the goroutines by stack
// (out/goroutines.txt: how many each device keeps) and the runtime's
// memory classes, in total and per device (out/memory.txt).
func (b *bench) profileRestore(dir, out string) error {
	work := filepath.Join(b.tmp, "profile")
	if err := copyTree(dir, work); err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	cpu, err := os.Create(filepath.Join(out, "cpu.pprof"))
	if err != nil {
		return err
	}
	defer cpu.Close()

	// A sample every 4 KiB rather than every 512 KiB: per-device objects
	// are a few kilobytes each, and the default rate misses most of them.
	runtime.MemProfileRate = 4096
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	t0 := time.Now()
	ctx := context.Background()
	core, err := gateway.OpenCore(ctx, gateway.Config{Storages: work, Sandbox: true, Simulator: b.simURL()}, slog.New(slog.DiscardHandler))
	if err != nil {
		pprof.StopCPUProfile()
		return err
	}
	defer core.Close()
	svc := core.Devices
	want := len(svc.List(ctx))
	for svc.CountByState()[string(domain.StateConnected)] < want {
		if time.Since(t0) > 5*time.Minute {
			pprof.StopCPUProfile()
			return fmt.Errorf("in-process restore: not all %d connected in 5 min", want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	pprof.StopCPUProfile()
	b.log.Info("in-process restore profiled", "devices", want, "took", time.Since(t0).Round(time.Millisecond))
	time.Sleep(settle)
	runtime.GC()
	heap, err := os.Create(filepath.Join(out, "heap.pprof"))
	if err != nil {
		return err
	}
	defer heap.Close()
	if err := pprof.WriteHeapProfile(heap); err != nil {
		return err
	}
	// Goroutines by stack, counted: which of them each device keeps.
	gr, err := os.Create(filepath.Join(out, "goroutines.txt"))
	if err != nil {
		return err
	}
	defer gr.Close()
	if err := pprof.Lookup("goroutine").WriteTo(gr, 1); err != nil {
		return err
	}
	return writeMemoryClasses(filepath.Join(out, "memory.txt"), want)
}

// writeMemoryClasses writes the Go runtime's memory classes
// (runtime/metrics /memory/classes/...), the goroutine count and the GC
// goal, in total and per device: where the runtime's share of the RSS goes
// (heap objects, free heap kept, goroutine stacks, runtime structures).
func writeMemoryClasses(path string, devices int) error {
	var samples []metrics.Sample
	for _, d := range metrics.All() {
		switch {
		case d.Kind == metrics.KindUint64 && (strings.HasPrefix(d.Name, "/memory/classes/") ||
			d.Name == "/sched/goroutines:goroutines" || d.Name == "/gc/heap/goal:bytes" || d.Name == "/gc/cycles/total:gc-cycles"):
		case d.Kind == metrics.KindFloat64 && (d.Name == "/cpu/classes/gc/total:cpu-seconds" || d.Name == "/cpu/classes/user:cpu-seconds" ||
			d.Name == "/cpu/classes/total:cpu-seconds"):
		default:
			continue
		}
		samples = append(samples, metrics.Sample{Name: d.Name})
	}
	metrics.Read(samples)
	var s strings.Builder
	fmt.Fprintf(&s, "%d devices, GOGC=%q\n", devices, os.Getenv("GOGC"))
	for _, m := range samples {
		if m.Value.Kind() == metrics.KindFloat64 {
			fmt.Fprintf(&s, "%-60s %12.3f (since start, whole process)\n", m.Name, m.Value.Float64())
			continue
		}
		v := m.Value.Uint64()
		fmt.Fprintf(&s, "%-60s %12d  %10.1f per device\n", m.Name, v, float64(v)/float64(devices))
	}
	return os.WriteFile(path, []byte(s.String()), 0o644)
}

// simURL is the simulator process's URL, or "" when it runs in process.
func (b *bench) simURL() string {
	if b.sim == nil {
		return ""
	}
	return b.sim.URL
}
