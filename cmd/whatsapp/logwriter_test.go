package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLogWriterFlushesOnTimeAndClose(t *testing.T) {
	var out syncWriter
	l := newLogWriter(&out, 10*time.Millisecond)
	if _, err := l.Write([]byte("one\n")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, func() bool { return out.String() == "one\n" }, "the periodic flush")

	l2 := newLogWriter(&out, time.Hour)
	_, _ = l2.Write([]byte("two\n"))
	if strings.Contains(out.String(), "two") {
		t.Fatal("written before a flush was due")
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if out.String() != "one\ntwo\n" {
		t.Fatalf("after Close: %q", out.String())
	}
}

// Lines written at once by many goroutines, past the buffer's sizes, all
// come out whole and in each writer's order, without a timed flush.
func TestLogWriterKeepsEveryLineWhole(t *testing.T) {
	t.Parallel()
	var out syncWriter
	l := newLogWriter(&out, time.Hour)
	const writers, lines = 8, 3000
	line := strings.Repeat("x", 100)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range lines {
				_, _ = fmt.Fprintf(l, "%d %d %s\n", w, i, line)
			}
		}()
	}
	wg.Wait()
	// More than flushAt is buffered: the flusher was woken without waiting
	// for the hour.
	eventually(t, 60*time.Second, func() bool { return len(out.String()) > flushAt }, "a flush once the buffer filled")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	next := make([]int, writers)
	all := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(all) != writers*lines {
		t.Fatalf("%d lines, want %d", len(all), writers*lines)
	}
	for _, s := range all {
		var w, i int
		var rest string
		if _, err := fmt.Sscanf(s, "%d %d %s", &w, &i, &rest); err != nil || rest != line || i != next[w] {
			t.Fatalf("line %q: writer %d's line %d expected", s, w, next[w])
		}
		next[w]++
	}
}
