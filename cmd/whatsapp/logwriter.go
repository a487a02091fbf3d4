package main

import (
	"io"
	"sync"
	"time"
)

// Sizes of logWriter's buffer: past flushAt the flusher is woken at once;
// past maxBuffered (the destination cannot keep up) a Write waits for its
// lines to be written, so that memory stays bounded.
const (
	flushAt     = 64 << 10
	maxBuffered = 1 << 20
)

// logWriter buffers log lines and writes them out every interval, when the
// buffer fills, and at Close. One write system call per access-log line
// was the largest single cost of a busy API (see `make bench`); batching
// them costs at most interval of log lines if the process is killed.
//
// A Write only appends to the buffer under a short lock: the writing out
// happens in the flusher goroutine on a second buffer, so that requests
// never wait for the destination (a file, a pipe) while a batch goes out.
type logWriter struct {
	w io.Writer

	mu  sync.Mutex
	buf []byte // lines not yet handed to the flusher

	out   sync.Mutex // serialises writing to w; holds spare
	spare []byte     // the buffer being (or last) written out

	kick chan struct{}
	stop chan struct{}
	done chan struct{}
}

// newLogWriter starts flushing to w every interval until Close.
func newLogWriter(w io.Writer, interval time.Duration) *logWriter {
	l := &logWriter{
		w: w, buf: make([]byte, 0, flushAt), spare: make([]byte, 0, flushAt),
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
	go l.flushEvery(interval)
	return l
}

// Write buffers p, a whole log record: slog handlers write each record in
// one call, so a flush never splits a line.
func (l *logWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	l.buf = append(l.buf, p...)
	n := len(l.buf)
	l.mu.Unlock()
	switch {
	case n >= maxBuffered:
		if err := l.flush(); err != nil {
			return 0, err
		}
	case n >= flushAt:
		select {
		case l.kick <- struct{}{}:
		default: // already woken
		}
	}
	return len(p), nil
}

func (l *logWriter) flushEvery(interval time.Duration) {
	defer close(l.done)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		case <-l.kick:
		}
		_ = l.flush()
	}
}

// flush writes out what is buffered: it swaps the buffer for the spare one
// under the lock and writes outside it.
func (l *logWriter) flush() error {
	l.out.Lock()
	defer l.out.Unlock()
	l.mu.Lock()
	batch := l.buf
	l.buf = l.spare[:0]
	l.mu.Unlock()
	var err error
	if len(batch) > 0 {
		_, err = l.w.Write(batch)
	}
	if cap(batch) > maxBuffered {
		batch = make([]byte, 0, flushAt) // do not keep a burst's buffer for ever
	}
	l.spare = batch[:0]
	return err
}

// Close stops the flushing and writes out what is buffered.
func (l *logWriter) Close() error {
	close(l.stop)
	<-l.done
	return l.flush()
}
