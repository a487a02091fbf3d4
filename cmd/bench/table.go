package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// row is one line of the results table. floor and ratio may be empty where
// there is nothing to compare with; met is "yes", "no" or "" (no goal).
type row struct {
	figure, value, floor, ratio, goal, met string
}

func (b *bench) add(r row) {
	b.rows = append(b.rows, r)
	b.log.Info("measured", "figure", r.figure, "value", r.value, "floor", r.floor, "met", r.met)
}

// markdown renders the table and the machine it ran on.
func (b *bench) markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "\n| figure | value | floor | ratio | goal | met? |\n|---|---|---|---|---|---|\n")
	for _, r := range b.rows {
		fmt.Fprintf(&s, "| %s | %s | %s | %s | %s | %s |\n", r.figure, dash(r.value), dash(r.floor), dash(r.ratio), dash(r.goal), dash(r.met))
	}
	fmt.Fprintf(&s, "\nMachine: %s, %d cores, %s, %s, %s.\n", cpuModel(), runtime.NumCPU(), runtime.Version(),
		runtime.GOOS+"/"+runtime.GOARCH, time.Now().UTC().Format("2006-01-02"))
	return s.String()
}

func dash(s string) string {
	if s == "" {
		return "–"
	}
	return s
}

func yesNo(ok bool) string {
	if ok {
		return "yes"
	}
	return "no"
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func millis(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

func mib(n float64) string {
	if n < 10<<20 {
		return fmt.Sprintf("%.2f MiB", n/(1<<20))
	}
	return fmt.Sprintf("%.0f MiB", n/(1<<20))
}

func ratio(a, b float64) string {
	if b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a/b)
}
