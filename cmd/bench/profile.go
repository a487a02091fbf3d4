package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/gateway"
	"github.com/gowa-dev/gowa/domain"
)

// profileRestore restores a copy of dir in this process, wired by the
// gateway's own wiring (cmd/internal/gateway) without its HTTP server (the
// gateway binary serves no pprof), with a CPU profile from
// start until every device is connected and a heap profile after settling.
// It writes out/cpu.pprof and out/heap.pprof.
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
	return pprof.WriteHeapProfile(heap)
}

// simURL is the simulator process's URL, or "" when it runs in process.
func (b *bench) simURL() string {
	if b.sim == nil {
		return ""
	}
	return b.sim.URL
}
