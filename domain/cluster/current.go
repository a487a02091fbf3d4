package cluster

import "time"

// Current tells whether this replica may run devices at this moment: it
// is not fenced or gone, and its last successful renewal started less than
// 2/3 of the lease time ago by the local monotonic clock. Unlike Fenced,
// it needs no goroutine to have run: a process paused past its leases
// (SIGSTOP, a long GC pause) knows it the instant it wakes, before the
// watchdog drops its devices. The wiring gates every WhatsApp dial on it,
// so that a connection that broke while the process was paused is not
// dialled again by the library's own reconnect loop.
func (c *Coordinator) Current() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return !c.fenced && !c.left && time.Since(c.lastOK) < c.staleAfter()
}
