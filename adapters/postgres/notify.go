package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Listen wakes the returned channel at every NOTIFY on channel from any
// replica (wake-ups are coalesced: the channel holds one), until ctx ends.
// It listens on a connection of its own, taken from the pool and given
// back when ctx ends; when that connection fails it takes another, and
// wakes the channel once more, since notifications sent meanwhile were
// missed.
func (db *DB) Listen(ctx context.Context, channel string) <-chan struct{} {
	wake := make(chan struct{}, 1)
	go func() {
		wait := 100 * time.Millisecond
		for ctx.Err() == nil {
			if err := db.listen(ctx, channel, wake, func() { wait = 100 * time.Millisecond }); err != nil && ctx.Err() == nil {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
				case <-t.C:
				}
				t.Stop()
				wait = min(2*wait, 5*time.Second)
			}
		}
	}()
	return wake
}

func (db *DB) listen(ctx context.Context, channel string, wake chan struct{}, connected func()) error {
	pc, err := db.Pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// A connection that was listening is not given back to the pool.
	conn := pc.Hijack()
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{channel}.Sanitize()); err != nil {
		return err
	}
	connected()
	wakeUp(wake)
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return err
		}
		wakeUp(wake)
	}
}

func wakeUp(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Notify wakes every replica listening on channel.
func (db *DB) Notify(ctx context.Context, channel string) error {
	if _, err := db.Pool.Exec(ctx, `SELECT pg_notify($1, '')`, channel); err != nil {
		return fmt.Errorf("notify %s: %w", channel, Unavailable(err))
	}
	return nil
}
