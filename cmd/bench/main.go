// Command bench measures the gateway against the simulated WhatsApp
// network and prints a Markdown table, each figure beside the floor that
// bare whatsmeow (or a bare net/http handler) sets in the same run:
//
//	go run ./cmd/bench                 restore and memory at N = 50, 200, 500, 1000, 2000, and the rest
//	go run ./cmd/bench -quick          N = 20 and short load phases (under ~2 min)
//	go run ./cmd/bench -n 100,300      other sizes
//	go run ./cmd/bench -status 3       only the status endpoint, three runs
//	go run ./cmd/bench -scale          only the restore and memory phases
//	go run ./cmd/bench -login 3        only the first QR, three rounds of 5
//	go run ./cmd/bench -scale -keep    … and keep the scratch folder, for
//	go run ./cmd/bench -scale -reuse DIR   the same sessions restored again
//	go run ./cmd/bench -replicas       only the replica phase: 500 devices on 3
//	                                   replicas on one PostgreSQL beside one gateway
//	                                   on SQLite, failover after kill -9 (-replica-n)
//
// It builds the gateway binary, runs it as `whatsapp sandbox` on a
// temporary storage folder, and drives it over HTTP. For the restore and
// memory phases the simulated WhatsApp runs in a process of its own
// (`whatsapp simulator`, the gateway started with --simulator), so that the
// gateway's RSS counts the gateway alone (-inproc-sim puts it back inside
// the measured processes). The restore and memory floors run in a child
// process (this binary, re-executed with the hidden subcommand "floor")
// attached to the same simulator, so that both sides count N clients.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor-http" {
		if err := floorHTTPMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench floor-http:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := floorMain(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "bench floor:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// config is what the flags ask for.
type config struct {
	sizes    []int
	loadTime time.Duration // each API and send phase
	keep     bool
	profile  string // folder for pprof profiles of the in-process restore
	events   bool   // only the live-event phases
	status   int    // only the status endpoint's phase, this many times
	// inprocSim runs the restore and memory phases with the simulator
	// inside the gateway (and floor) process, as `whatsapp sandbox` alone
	// does, instead of in a `whatsapp simulator` process of its own.
	inprocSim bool
	scaleOnly bool // only the restore and memory phases
	loginOnly int  // only the first-QR phase, this many rounds of 5 logins
	// replicasOnly runs only the replica phase: replicaN devices on one
	// gateway on SQLite and on 3 replicas on one PostgreSQL.
	replicasOnly bool
	replicaN     int
	leaseTTL     time.Duration // the replicas' --lease-ttl
	// reuse is the scratch folder of an earlier run kept with -keep: the
	// scale phase restores the devices already linked there (and links
	// only the ones a larger N needs), so that a change is measured
	// before and after on the same sessions without linking them again.
	reuse string
	// gwEnv is added to the environment of the gateway whose restore and
	// memory are measured (not the floors'): GOGC=50, APP_…=…
	gwEnv    []string
	noFloors bool // the scale phase without its floors (quick comparisons)
}

func parseFlags() (config, error) {
	var (
		cfg   config
		sizes = flag.String("n", "50,200,500,1000,2000", "restore sizes, comma-separated: the memory curve")
		quick = flag.Bool("quick", false, "N = 20 only and short load phases")
	)
	flag.BoolVar(&cfg.replicasOnly, "replicas", false, "only the replica phase: restore on 3 replicas on one PostgreSQL beside one gateway on SQLite, failover after kill -9, memory and database connections")
	flag.IntVar(&cfg.replicaN, "replica-n", 0, "devices in the replica phase (default 500, 20 with -quick)")
	flag.DurationVar(&cfg.leaseTTL, "lease-ttl", 15*time.Second, "the replicas' --lease-ttl in the replica phase (the gateway's default is 15s)")
	flag.DurationVar(&cfg.loadTime, "d", 5*time.Second, "duration of each load phase (API, send)")
	flag.BoolVar(&cfg.keep, "keep", false, "keep the temporary folder")
	gwEnv := flag.String("gw-env", "", "KEY=value pairs, comma-separated, for the measured gateway only in the scale phase (GOGC=50,GODEBUG=…)")
	flag.BoolVar(&cfg.noFloors, "no-floors", false, "the scale phase without the bare-whatsmeow floors (their columns then read 0)")
	flag.StringVar(&cfg.reuse, "reuse", "", "the scratch folder of an earlier -keep run: restore the devices linked there instead of linking from none (kept afterwards)")
	flag.BoolVar(&cfg.events, "events", false, "only the live-event phases (streams, webhooks)")
	flag.IntVar(&cfg.status, "status", 0, "only the status endpoint against its floor, this many runs in one gateway (with -d per run)")
	flag.BoolVar(&cfg.inprocSim, "inproc-sim", false, "restore and memory phases with the simulator inside the measured processes (their RSS then includes it)")
	flag.BoolVar(&cfg.scaleOnly, "scale", false, "only the restore and memory phases")
	flag.IntVar(&cfg.loginOnly, "login", 0, "only the first QR of a new device (median of 5), this many rounds in one gateway")
	flag.StringVar(&cfg.profile, "profile", "", "also restore the largest N in process under pprof and write cpu.pprof, heap.pprof, goroutines.txt and memory.txt to this folder")
	flag.Parse()
	if *gwEnv != "" {
		for _, kv := range strings.Split(*gwEnv, ",") {
			if !strings.Contains(kv, "=") {
				return cfg, fmt.Errorf("-gw-env: %q is not KEY=value", kv)
			}
			cfg.gwEnv = append(cfg.gwEnv, kv)
		}
	}
	if *quick {
		*sizes = "20"
		cfg.loadTime = 3 * time.Second
	}
	if cfg.replicaN == 0 {
		cfg.replicaN = 500
		if *quick {
			cfg.replicaN = 20
		}
	}
	if cfg.replicaN < replicaCount {
		return cfg, fmt.Errorf("-replica-n: want at least %d devices", replicaCount)
	}
	for _, f := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return cfg, fmt.Errorf("-n: bad size %q", f)
		}
		cfg.sizes = append(cfg.sizes, n)
	}
	slices.Sort(cfg.sizes)
	return cfg, nil
}

// bench is one run: the binary, the scratch folder and the results.
type bench struct {
	cfg  config
	bin  string
	tmp  string
	log  *slog.Logger
	rows []row
	sim  *proc.Gateway // the simulator process of the scale phases; nil in process
}

// Credentials the gateway runs with, so that every measured request pays
// for Basic auth.
const (
	benchUser = "bench"
	benchPass = "secret"
)

func run() error {
	cfg, err := parseFlags()
	if err != nil {
		return err
	}
	b := &bench{cfg: cfg, log: slog.New(slog.NewTextHandler(os.Stderr, nil))}
	if cfg.reuse != "" {
		b.tmp, cfg.keep = cfg.reuse, true
	} else if b.tmp, err = os.MkdirTemp("", "gowa-bench-"); err != nil {
		return err
	}
	if cfg.keep {
		b.log.Info("keeping the scratch folder", "dir", b.tmp)
	} else {
		defer os.RemoveAll(b.tmp)
	}
	start := time.Now()
	b.log.Info("building the gateway")
	b.bin, err = proc.Build(context.Background(), b.tmp)
	if err != nil {
		return err
	}
	if cfg.status > 0 {
		if err := b.statusOnly(); err != nil {
			return err
		}
		b.log.Info("done", "took", time.Since(start).Round(time.Second))
		fmt.Print(b.markdown())
		return nil
	}
	if cfg.loginOnly > 0 {
		if err := b.loginOnly(); err != nil {
			return err
		}
		b.log.Info("done", "took", time.Since(start).Round(time.Second))
		fmt.Print(b.markdown())
		return nil
	}
	if cfg.replicasOnly {
		if err := b.replicas(); err != nil {
			return fmt.Errorf("replicas: %w", err)
		}
		b.log.Info("done", "took", time.Since(start).Round(time.Second))
		fmt.Print(b.markdown())
		return nil
	}
	if !cfg.events {
		if !cfg.scaleOnly {
			if err := b.single(); err != nil {
				return err
			}
		}
		if err := b.scale(); err != nil {
			return err
		}
	}
	if !cfg.scaleOnly {
		if err := b.events(); err != nil {
			return fmt.Errorf("live events: %w", err)
		}
	}
	if !cfg.events && !cfg.scaleOnly {
		// Skipped with a row saying why when PostgreSQL is not installed.
		// Last: a failure here still prints what the others measured.
		if err := b.replicas(); err != nil {
			fmt.Print(b.markdown())
			return fmt.Errorf("replicas: %w", err)
		}
	}
	b.log.Info("done", "took", time.Since(start).Round(time.Second))
	fmt.Print(b.markdown())
	return nil
}

// start runs the gateway on storages, logging into the scratch folder, and
// waits for /health. It returns the time from exec to the first 200. args
// are more flags (--simulator).
func (b *bench) start(storages string, args ...string) (*proc.Gateway, time.Duration, error) {
	return b.startEnv(storages, nil, args...)
}

// startEnv is start with env added to the gateway's environment.
func (b *bench) startEnv(storages string, env []string, args ...string) (*proc.Gateway, time.Duration, error) {
	g, err := proc.Start(proc.Options{
		Bin: b.bin, Storages: storages, Auth: benchUser + ":" + benchPass,
		LogPath: filepath.Join(b.tmp, "gateway.log"), Args: args, Env: env,
	})
	if err != nil {
		return nil, 0, err
	}
	up, err := g.WaitHealthy(60 * time.Second)
	if err != nil {
		g.Kill()
		return nil, 0, fmt.Errorf("%w (logs in %s)", err, filepath.Join(b.tmp, "gateway.log"))
	}
	return g, up, nil
}

// startSimulator runs `whatsapp simulator` on a folder of the scratch
// folder and waits for /health.
func (b *bench) startSimulator() (*proc.Gateway, error) {
	return b.startSimulatorIn("simulator")
}

// startSimulatorIn is startSimulator on the folder name, logging to
// name.log.
func (b *bench) startSimulatorIn(name string) (*proc.Gateway, error) {
	sim, err := proc.Start(proc.Options{
		Bin: b.bin, Simulator: true, Storages: filepath.Join(b.tmp, name),
		LogPath: filepath.Join(b.tmp, name+".log"),
	})
	if err != nil {
		return nil, err
	}
	if _, err := sim.WaitHealthy(60 * time.Second); err != nil {
		sim.Kill()
		return nil, fmt.Errorf("the simulator: %w (logs in %s)", err, filepath.Join(b.tmp, name+".log"))
	}
	return sim, nil
}

// stop stops the gateway with SIGTERM and wants exit code 0.
func stop(g *proc.Gateway) error {
	g.CloseIdle()
	code, err := g.Stop(60 * time.Second)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("the gateway exited with code %d", code)
	}
	return nil
}
