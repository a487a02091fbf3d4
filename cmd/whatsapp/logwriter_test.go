package main

import (
	"strings"
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
