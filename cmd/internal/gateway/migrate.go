package gateway

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/domain"
)

// MigrateConfig says what Migrate moves where.
type MigrateConfig struct {
	// From is the storage folder of a gateway on SQLite (its --storages).
	From string
	// To is the PostgreSQL URI the replicas will share (their --db).
	To string
	// Out receives one line per thing copied or skipped, then a summary.
	// Nothing secret is written: no password, no session key, no webhook
	// secret.
	Out io.Writer
}

// MigrateReport counts what Migrate did.
type MigrateReport struct {
	SessionsCopied, SessionsSkipped int
	DevicesCopied, DevicesSkipped   int
	// Events, Deliveries and Webhooks count the events, pending webhook
	// deliveries and device webhooks copied from the folder's events.db.
	Events, Deliveries, Webhooks int
	// EventsSkipped is set when PostgreSQL's event log had been imported
	// from this folder before: nothing of it was copied.
	EventsSkipped bool
	// PairingsLeft counts pairings cut off in the folder before the phone
	// linked them: they hold nothing to move.
	PairingsLeft int
}

// Migrate copies a storage folder into PostgreSQL: every linked session
// (postgres.Sessions.ImportSession), the device slots (Registry.Import),
// and the event log with its ids, the pending webhook deliveries and the
// devices' webhooks (Events.ImportFrom). It holds the folder's lock
// throughout, so it refuses to run while a gateway uses the folder, and
// no gateway starts on it meanwhile. The folder is left as it was
// (whatsmeow may bring an old session database up to its current schema,
// as a gateway would at start), so it stays a backup.
//
// Running it again changes nothing: a session whose device PostgreSQL has
// already is skipped whole (it may have moved on since: the replicas own
// it now), as is a slot whose id is there, and an event log imported
// before (deliveries made and webhooks removed since stay so). Each
// session is copied in one transaction, as is the event log, so a run that
// stops midway leaves whole sessions only, and the next run copies the
// rest.
func Migrate(ctx context.Context, cfg MigrateConfig) (MigrateReport, error) {
	var rep MigrateReport
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	root, err := filepath.Abs(cfg.From)
	if err != nil {
		return rep, err
	}
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return rep, fmt.Errorf("storage folder %s: not found", root)
	}
	lock, err := lockStorage(root)
	if err != nil {
		return rep, err
	}
	defer lock.release()

	store, err := sqlite.NewSessions(root)
	if err != nil {
		return rep, err
	}
	stored, err := store.Sessions()
	if err != nil {
		return rep, err
	}
	var slots []domain.Slot
	if exists(filepath.Join(root, sqlite.RegistryFile)) {
		reg, err := sqlite.OpenRegistry(root)
		if err != nil {
			return rep, err
		}
		slots, err = reg.List(ctx)
		_ = reg.Close()
		if err != nil {
			return rep, err
		}
	}

	db, err := postgres.Open(ctx, cfg.To, postgres.Options{Holder: "migrate-" + randomHex(4), MaxConns: 4})
	if err != nil {
		return rep, err
	}
	defer db.Close()
	sessions, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		return rep, err
	}

	var failed []error
	fail := func(what string, err error) {
		failed = append(failed, fmt.Errorf("%s: %w", what, err))
		fmt.Fprintf(out, "%s: not copied: %v\n", what, err)
	}
	for _, st := range stored {
		path := store.Path(st.JID)
		if st.JID == "" {
			// A pairing cut off by a crash: one the phone had linked is
			// moved as the linked session it is (the device service adopts
			// it into its slot); one that never linked holds nothing.
			if path, err = store.Locate(st.Key); err != nil {
				return rep, err
			}
		}
		got, err := sessions.ImportSession(ctx, path, st.JID, st.DeviceID)
		what := "session " + cmp.Or(got.JID, st.JID, st.Key)
		switch {
		case err != nil:
			fail(what, err)
		case got.JID == "":
			rep.PairingsLeft++
		case got.Copied:
			rep.SessionsCopied++
			fmt.Fprintf(out, "%s: copied\n", what)
		default:
			rep.SessionsSkipped++
			fmt.Fprintf(out, "%s: skipped (PostgreSQL has it)\n", what)
		}
	}

	registry := postgres.NewRegistry(db)
	for _, sl := range slots {
		what := "device " + sl.ID
		switch created, err := registry.Import(ctx, sl); {
		case err != nil:
			fail(what, err)
		case created:
			rep.DevicesCopied++
			fmt.Fprintf(out, "%s: copied\n", what)
		default:
			rep.DevicesSkipped++
			fmt.Fprintf(out, "%s: skipped (PostgreSQL has it)\n", what)
		}
	}

	if exists(filepath.Join(root, sqlite.EventsFile)) {
		if err := migrateEvents(ctx, root, postgres.NewEvents(db), &rep, out); err != nil {
			fail("event log", err)
		}
	}

	fmt.Fprintf(out, "sessions: %d copied, %d skipped; devices: %d copied, %d skipped; ",
		rep.SessionsCopied, rep.SessionsSkipped, rep.DevicesCopied, rep.DevicesSkipped)
	if rep.EventsSkipped {
		fmt.Fprintf(out, "event log: skipped (imported before)\n")
	} else {
		fmt.Fprintf(out, "event log: %d events, %d pending deliveries, %d webhooks copied\n", rep.Events, rep.Deliveries, rep.Webhooks)
	}
	if rep.PairingsLeft > 0 {
		fmt.Fprintf(out, "pairings cut off before the phone linked them: %d (they hold nothing to move)\n", rep.PairingsLeft)
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("%d not copied (run migrate again once fixed; what was copied stays): %w", len(failed), failed[0])
	}
	return rep, nil
}

// migrateEvents imports the folder's event log, outbox and device webhooks
// into dst.
func migrateEvents(ctx context.Context, root string, dst *postgres.Events, rep *MigrateReport, out io.Writer) error {
	src, err := sqlite.OpenEvents(root)
	if err != nil {
		return err
	}
	defer src.Close()
	n, err := dst.ImportFrom(ctx, src)
	if err != nil {
		return err
	}
	rep.Events, rep.Deliveries, rep.Webhooks, rep.EventsSkipped = n.Events, n.Deliveries, n.Webhooks, n.Again
	if n.Again {
		fmt.Fprintf(out, "event log: skipped (imported before)\n")
	} else {
		fmt.Fprintf(out, "event log: copied (%d events, %d pending deliveries, %d webhooks)\n", n.Events, n.Deliveries, n.Webhooks)
	}
	return nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
