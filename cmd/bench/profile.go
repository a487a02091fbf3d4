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

	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/adapters/wasim"
	"github.com/gowa-dev/gowa/adapters/whatsapp"
	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/domain/device"
)

// profileRestore restores a copy of dir in this process, wired as
// cmd/whatsapp wires the sandbox (same adapters, same device service, no
// HTTP server: the gateway binary serves no pprof), with a CPU profile from
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

	log := slog.New(slog.DiscardHandler)
	sessions, err := sqlite.NewSessions(work)
	if err != nil {
		return err
	}
	registry, err := sqlite.OpenRegistry(work)
	if err != nil {
		return err
	}
	defer registry.Close()
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	t0 := time.Now()
	sim, err := wasim.New(wasim.Options{Dir: filepath.Join(work, ".wasim")})
	if err != nil {
		pprof.StopCPUProfile()
		return err
	}
	defer sim.Close()
	root := wasim.RootPublicKey()
	svc := device.New(device.Config{
		WhatsApp: whatsapp.New(whatsapp.Options{Logger: log, HTTPClient: sim.HTTPClient(), CertRoot: &root}),
		Sessions: sessions, Registry: registry, Logger: log,
	})
	defer svc.Close()
	ctx := context.Background()
	if err := svc.Start(ctx); err != nil {
		pprof.StopCPUProfile()
		return err
	}
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
