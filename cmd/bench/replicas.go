package main

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
	"github.com/gowa-dev/gowa/api"
	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// replicaCount is how many replicas share the database in the replica
// phase (issue 12's figure).
const replicaCount = 3

// replicaResult is what the replica phase measured.
type replicaResult struct {
	n        int
	leaseTTL time.Duration
	link     time.Duration // linking N on the SQLite gateway
	migrate  time.Duration // `whatsapp migrate` of its folder into PostgreSQL

	sqliteRestore time.Duration // exec → all N logged in at the simulator
	sqliteRSS     float64

	restore     time.Duration // exec of the first replica → all N logged in once at the simulator
	listed      time.Duration // same start → one replica's GET /devices lists all N connected
	reps        []replicaFigures
	failover    time.Duration // kill -9 → all N logged in once again
	victimID    string
	victimHeld  int  // devices the killed replica held
	maxAtOnce   int  // most connections any device had at once, the whole phase
	afterKillOK bool // no device still leased to the dead replica
}

// replicaFigures is one replica after the restore settled.
type replicaFigures struct {
	id      string
	held    int // live leases
	rss     float64
	pgConns int // pg_stat_activity rows with application_name "gowa <id>"
}

// replicas links N devices on one gateway on SQLite, times its restore,
// migrates its folder into a throwaway PostgreSQL, times the restore of
// the same N on 3 replicas, reads their memory and database connections,
// then kills one with SIGKILL and times the failover.
func (b *bench) replicas() error {
	if _, err := pgtest.Binaries(); err != nil {
		b.log.Warn("skipping the replica phase", "why", err.Error())
		b.add(row{figure: "Replicas (3 on one PostgreSQL): skipped", value: "PostgreSQL's binaries are not installed (apt-get install postgresql)"})
		return nil
	}
	n := b.cfg.replicaN
	res := replicaResult{n: n, leaseTTL: b.cfg.leaseTTL}
	pg, err := pgtest.StartCluster()
	if err != nil {
		return err
	}
	defer pg.Close()
	ctx := context.Background()
	uri, err := pg.CreateDB(ctx)
	if err != nil {
		return err
	}
	sim, err := b.startSimulatorIn("replica-simulator")
	if err != nil {
		return err
	}
	defer sim.Kill()
	simArgs := []string{"--simulator", sim.URL}

	// 1. Link N on one gateway on SQLite; remember their JIDs.
	dir := filepath.Join(b.tmp, "replica-sqlite")
	g, _, err := b.start(dir, simArgs...)
	if err != nil {
		return err
	}
	b.log.Info("replicas: linking devices on one SQLite gateway", "devices", n)
	t0 := time.Now()
	if err := linkDevices(g, 0, n); err != nil {
		g.Kill()
		return err
	}
	res.link = time.Since(t0)
	list, err := g.Devices()
	if err != nil {
		g.Kill()
		return err
	}
	var jids []string
	for _, d := range list {
		if d.Jid != nil && *d.Jid != "" {
			jids = append(jids, *d.Jid)
		}
	}
	if len(jids) != n {
		g.Kill()
		return fmt.Errorf("replicas: %d devices linked with a JID, want %d", len(jids), n)
	}
	if err := stop(g); err != nil {
		return err
	}

	// 2a. The same N restored by one gateway on SQLite.
	g, _, err = b.start(dir, simArgs...)
	if err != nil {
		return err
	}
	if res.sqliteRestore, err = waitLoggedInOnce(sim, jids, g.Started, 5*time.Minute); err != nil {
		g.Kill()
		return fmt.Errorf("replicas, SQLite restore: %w", err)
	}
	time.Sleep(settle)
	rss, err := proc.RSS(g.PID())
	if err != nil {
		g.Kill()
		return err
	}
	res.sqliteRSS = float64(rss)
	b.log.Info("replicas: SQLite gateway restored", "devices", n, "took", res.sqliteRestore.Round(time.Millisecond), "rss", mib(res.sqliteRSS))
	if err := stop(g); err != nil {
		return err
	}

	// 2b. Its folder into PostgreSQL, then 3 replicas on the database.
	t0 = time.Now()
	mctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	out, err := exec.CommandContext(mctx, b.bin, "migrate", "--from", dir, "--to", uri).CombinedOutput()
	cancel()
	if err != nil {
		return fmt.Errorf("migrate: %w\n%s", err, out)
	}
	res.migrate = time.Since(t0)
	b.log.Info("replicas: migrated", "took", res.migrate.Round(time.Millisecond))

	type replica struct {
		url string
		g   *proc.Gateway
	}
	var reps []*replica
	defer func() {
		for _, r := range reps {
			r.g.Kill()
		}
	}()
	for i := range replicaCount {
		port, err := freePort()
		if err != nil {
			return err
		}
		url := "http://127.0.0.1:" + strconv.Itoa(port)
		name := "replica-" + strconv.Itoa(i)
		rg, err := proc.Start(proc.Options{
			Bin: b.bin, Storages: filepath.Join(b.tmp, name), Auth: benchUser + ":" + benchPass,
			LogPath: filepath.Join(b.tmp, name+".log"),
			Args: []string{"--port", strconv.Itoa(port), "--simulator", sim.URL, "--db", uri,
				"--advertise-url", url, "--lease-ttl", res.leaseTTL.String()},
		})
		if err != nil {
			return fmt.Errorf("start %s: %w", name, err)
		}
		reps = append(reps, &replica{url: url, g: rg})
	}
	began := reps[0].g.Started
	for _, r := range reps {
		if _, err := r.g.WaitHealthy(60 * time.Second); err != nil {
			return fmt.Errorf("replica %s: %w (logs in %s)", r.url, err, b.tmp)
		}
	}
	if res.restore, err = waitLoggedInOnce(sim, jids, began, 5*time.Minute); err != nil {
		return fmt.Errorf("replicas restore: %w", err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		ds, err := reps[0].g.Devices()
		if err == nil && countState(ds, api.Connected) == n {
			res.listed = time.Since(began)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replicas: GET /devices lists %d of %d connected 2 min after the simulator did (err %v)", countState(ds, api.Connected), n, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.log.Info("replicas: restored", "devices", n, "replicas", replicaCount, "took", res.restore.Round(time.Millisecond))

	// 3. Memory and database connections, after settling.
	time.Sleep(settle)
	conn, err := pgx.Connect(ctx, uri)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	ids := map[string]string{} // advertised URL → replica id
	rows, err := conn.Query(ctx, `SELECT id, addr FROM gowa_replicas WHERE expires_at > now()`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var id, addr string
		if err := rows.Scan(&id, &addr); err != nil {
			return err
		}
		ids[addr] = id
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range reps {
		id, ok := ids[r.url]
		if !ok {
			return fmt.Errorf("replica %s has no live row in gowa_replicas", r.url)
		}
		f := replicaFigures{id: id}
		rss, err := proc.RSS(r.g.PID())
		if err != nil {
			return err
		}
		f.rss = float64(rss)
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, "gowa "+id).Scan(&f.pgConns); err != nil {
			return err
		}
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM gowa_leases WHERE holder = $1 AND expires_at > now() AND device_id NOT LIKE '~%'`, id).Scan(&f.held); err != nil {
			return err
		}
		res.reps = append(res.reps, f)
	}

	// 4. kill -9 of the replica holding the most devices.
	victim := 0
	for i, f := range res.reps {
		if f.held > res.reps[victim].held {
			victim = i
		}
	}
	res.victimHeld, res.victimID = res.reps[victim].held, res.reps[victim].id
	if err := reps[victim].g.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	killed := time.Now()
	reps[victim].g.Kill() // waits for it
	// The simulator sees the dead replica's connections close a moment
	// after the exit: wait for that first, lest the wait below return
	// before the failover has begun.
	if err := waitNotAllOnce(sim, jids, 30*time.Second); err != nil {
		return err
	}
	if res.failover, err = waitLoggedInOnce(sim, jids, killed, 5*time.Minute); err != nil {
		return fmt.Errorf("failover: %w", err)
	}
	// The devices it held are leased to the survivors now.
	var stale int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM gowa_leases WHERE holder = $1 AND expires_at > now()`, res.reps[victim].id).Scan(&stale); err != nil {
		return err
	}
	res.afterKillOK = stale == 0
	b.log.Info("replicas: failover", "killed", res.reps[victim].id, "held", res.victimHeld, "took", res.failover.Round(time.Millisecond), "lease_ttl", res.leaseTTL)

	conns, err := sim.Connections()
	if err != nil {
		return err
	}
	for _, j := range jids {
		res.maxAtOnce = max(res.maxAtOnce, conns.MaxByDevice[j])
	}
	for i, r := range reps {
		if i != victim {
			if err := stop(r.g); err != nil {
				return err
			}
		}
	}
	reps = nil
	b.reportReplicas(res)
	return stop(sim)
}

// waitLoggedInOnce polls the simulator until every device in jids is
// logged in exactly once, and returns the time since since.
func waitLoggedInOnce(sim *proc.Gateway, jids []string, since time.Time, within time.Duration) (time.Duration, error) {
	poll := 20*time.Millisecond + time.Duration(len(jids))*100*time.Microsecond
	for {
		c, err := sim.Connections()
		once := 0
		if err == nil {
			for _, j := range jids {
				if c.ByDevice[j] == 1 {
					once++
				}
			}
			if once == len(jids) {
				return time.Since(since), nil
			}
		}
		if time.Since(since) > within {
			return 0, fmt.Errorf("%d of %d devices logged in once at the simulator after %s (err %v)", once, len(jids), within, err)
		}
		time.Sleep(poll)
	}
}

// waitNotAllOnce polls the simulator until some device in jids is not
// logged in exactly once.
func waitNotAllOnce(sim *proc.Gateway, jids []string, within time.Duration) error {
	start := time.Now()
	for {
		c, err := sim.Connections()
		if err == nil {
			for _, j := range jids {
				if c.ByDevice[j] != 1 {
					return nil
				}
			}
		}
		if time.Since(start) > within {
			return fmt.Errorf("the simulator still shows every device logged in %s after the kill (err %v)", within, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// reportReplicas adds the replica phase's rows.
func (b *bench) reportReplicas(r replicaResult) {
	n := float64(r.n)
	b.add(row{
		figure: fmt.Sprintf("Replicas: restore, N = %d on %d replicas, one PostgreSQL (exec of the first → all logged in once at the simulator)", r.n, replicaCount),
		value:  fmt.Sprintf("%s (%s/device); GET /devices lists all connected at %s", secs(r.restore), millis(r.restore/time.Duration(r.n)), secs(r.listed)),
		floor:  fmt.Sprintf("one gateway on SQLite, same N, same run: %s", secs(r.sqliteRestore)),
		ratio:  ratio(r.restore.Seconds(), r.sqliteRestore.Seconds()),
	})
	met := yesNo(r.afterKillOK && r.failover <= r.leaseTTL+5*time.Second)
	b.add(row{
		figure: fmt.Sprintf("Replicas: failover after kill -9 of the replica holding %d of %d devices (kill → all logged in once on the survivors)", r.victimHeld, r.n),
		value:  fmt.Sprintf("%s with --lease-ttl %s (killed %s)", secs(r.failover), r.leaseTTL, r.victimID),
		goal:   fmt.Sprintf("≤ lease TTL + 5 s = %s", secs(r.leaseTTL+5*time.Second)),
		met:    met,
	})
	var sum float64
	for _, f := range r.reps {
		sum += f.rss
	}
	b.add(row{
		figure: fmt.Sprintf("Replicas: memory, RSS per device, N = %d (sum of the %d replicas' RSS ÷ N; simulator in its own process)", r.n, replicaCount),
		value:  fmt.Sprintf("%s (%s total)", mb(sum/n), mib(sum)),
		floor:  fmt.Sprintf("one gateway on SQLite, same N: %s (%s)", mb(r.sqliteRSS/n), mib(r.sqliteRSS)),
		ratio:  ratio(sum, r.sqliteRSS),
	})
	sorted := append([]replicaFigures(nil), r.reps...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].id < sorted[j].id })
	for _, f := range sorted {
		per := "–"
		if f.held > 0 {
			per = mb(f.rss / float64(f.held))
		}
		b.add(row{
			figure: fmt.Sprintf("Replicas: replica %s, after the restore", f.id),
			value:  fmt.Sprintf("%d devices held; RSS %s (%s per device held); %d PostgreSQL connections", f.held, mib(f.rss), per, f.pgConns),
		})
	}
	b.add(row{
		figure: "Replicas: most simultaneous connections of any device at the simulator (whole phase: SQLite gateway, restore, failover)",
		value:  strconv.Itoa(r.maxAtOnce),
		goal:   "1",
		met:    yesNo(r.maxAtOnce == 1),
	})
	b.add(row{
		figure: fmt.Sprintf("Replicas: preparing, N = %d (linking on SQLite; `whatsapp migrate` into PostgreSQL)", r.n),
		value:  fmt.Sprintf("link %s; migrate %s", secs(r.link), secs(r.migrate)),
	})
}
