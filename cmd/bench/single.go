package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/gowa-dev/gowa/cmd/internal/proc"
)

// Simulated accounts of the single-gateway phases.
const (
	senderPhone  = "628100000001"
	contactPhone = "628100000002"
	senderDevice = "sender"
)

// single measures, on one gateway started on an empty folder: start-up
// with no sessions, login, the status endpoint and sending.
func (b *bench) single() error {
	g, up, err := b.start(filepath.Join(b.tmp, "single"))
	if err != nil {
		return err
	}
	defer g.Kill()
	b.add(row{figure: "Start-up, 0 sessions (exec → /health 200)", value: millis(up)})

	if err := b.login(g, ""); err != nil {
		return fmt.Errorf("login: %w", err)
	}
	if err := g.CreatePhone(senderPhone, "Sender"); err != nil {
		return err
	}
	if err := g.CreatePhone(contactPhone, "Contact"); err != nil {
		return err
	}
	if _, err := g.LinkQR(senderDevice, senderPhone); err != nil {
		return fmt.Errorf("link the sender: %w", err)
	}
	if err := b.statusAPI(g); err != nil {
		return fmt.Errorf("status API: %w", err)
	}
	if err := b.send(g); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	return stop(g)
}

// statusOnly is the status endpoint's phase alone, cfg.status times on
// one gateway with one linked device: a quick way to compare changes on
// the hot path.
func (b *bench) statusOnly() error {
	g, _, err := b.start(filepath.Join(b.tmp, "single"))
	if err != nil {
		return err
	}
	defer g.Kill()
	if err := g.CreatePhone(senderPhone, "Sender"); err != nil {
		return err
	}
	if _, err := g.LinkQR(senderDevice, senderPhone); err != nil {
		return fmt.Errorf("link the sender: %w", err)
	}
	for range b.cfg.status {
		if err := b.statusAPI(g); err != nil {
			return fmt.Errorf("status API: %w", err)
		}
	}
	return stop(g)
}

// loginOnly is the first-QR phase alone, cfg.loginOnly rounds on one
// gateway started on an empty folder: a quick way to repeat it.
func (b *bench) loginOnly() error {
	g, _, err := b.start(filepath.Join(b.tmp, "single"))
	if err != nil {
		return err
	}
	defer g.Kill()
	for round := range b.cfg.loginOnly {
		if err := b.login(g, fmt.Sprintf("r%d-", round)); err != nil {
			return fmt.Errorf("login: %w", err)
		}
	}
	return stop(g)
}

// login times the first QR of new devices, and a repeated login call
// during pairing, which must not touch the network: the simulator's count
// of connection attempts (or, without it, of open connections) must not
// move.
func (b *bench) login(g *proc.Gateway, prefix string) error {
	const tries = 5
	var first, again []time.Duration
	network := 0
	counted := "connection attempts"
	for i := range tries {
		id := fmt.Sprintf("%slogin-%d", prefix, i)
		t0 := time.Now()
		qr, err := g.Login(id)
		if err != nil {
			return err
		}
		first = append(first, time.Since(t0))
		before, err := g.Connections()
		if err != nil {
			return err
		}
		t0 = time.Now()
		qr2, err := g.Login(id)
		if err != nil {
			return err
		}
		again = append(again, time.Since(t0))
		after, err := g.Connections()
		if err != nil {
			return err
		}
		if qr2.QrString != qr.QrString {
			return fmt.Errorf("a repeated login of %s returned another QR", id)
		}
		if before.Attempts != nil && after.Attempts != nil {
			network += *after.Attempts - *before.Attempts
		} else {
			counted = "connections opened"
			network += max(0, after.Open-before.Open)
		}
		if err := g.Call("DELETE", "/devices/"+id, nil, nil); err != nil {
			return err
		}
	}
	mFirst, mAgain := median(first), median(again)
	b.add(row{
		figure: "Login: first QR of a new device (median of 5)",
		value:  fmt.Sprintf("%.1f ms (%.1f–%.1f)", ms(mFirst), ms(first[0]), ms(first[len(first)-1])),
		goal:   "≤ 15 ms", met: yesNo(mFirst <= 15*time.Millisecond),
	})
	b.add(row{
		figure: "Login: repeated call during pairing (median of 5)",
		value:  fmt.Sprintf("%s, %d %s", millis(mAgain), network, counted),
		goal:   "no network", met: yesNo(network == 0),
	})
	return nil
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// median of ds (which it sorts).
func median(ds []time.Duration) time.Duration {
	slices.Sort(ds)
	return ds[len(ds)/2]
}
