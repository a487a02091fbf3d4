package postgres_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/util/keys"

	"github.com/gowa-dev/gowa/adapters/postgres"
	"github.com/gowa-dev/gowa/adapters/postgres/pgtest"
)

// preKeyRows is the session's prekeys as stored: key id → uploaded.
func preKeyRows(t *testing.T, db *postgres.DB, jid string) map[uint32]bool {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT key_id, uploaded FROM whatsmeow_pre_keys WHERE jid = $1`, jid)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[uint32]bool{}
	for rows.Next() {
		var id int64
		var up bool
		if err := rows.Scan(&id, &up); err != nil {
			t.Fatal(err)
		}
		out[uint32(id)] = up
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func ids(ks []*keys.PreKey) []uint32 {
	out := make([]uint32, len(ks))
	for i, k := range ks {
		out[i] = k.KeyID
	}
	return out
}

func span(from, to uint32) []uint32 {
	var out []uint32
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

// The batched prekey store does what whatsmeow's does, step for step: the
// same keys returned, numbered alike, the same rows stored. Both sessions
// run the same steps; whatsmeow's is the reference.
func TestPreKeysBehaveAsWhatsmeows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, s := openSessions(t, pgtest.DB(t), "a")
	ref := linkSession(t, db, s, "ref", "628333:1@s.whatsapp.net")
	dev := linkSession(t, db, s, "dev", "628333:2@s.whatsapp.net")
	setLease(t, db, "ref", "a")
	setLease(t, db, "dev", "a")
	batched := s.PreKeys(*dev.ID, dev.PreKeys)

	type step struct {
		what string
		do   func(p store.PreKeyStore) (any, error)
	}
	getOrGen := func(n uint32) func(p store.PreKeyStore) (any, error) {
		return func(p store.PreKeyStore) (any, error) {
			ks, err := p.GetOrGenPreKeys(ctx, n)
			return ids(ks), err
		}
	}
	mark := func(upTo uint32) func(p store.PreKeyStore) (any, error) {
		return func(p store.PreKeyStore) (any, error) { return nil, p.MarkPreKeysAsUploaded(ctx, upTo) }
	}
	count := func(p store.PreKeyStore) (any, error) { return p.UploadedPreKeyCount(ctx) }
	steps := []step{
		{"first login's 812", getOrGen(812)},
		{"812 again, none uploaded yet", getOrGen(812)},
		{"fewer than stored", getOrGen(10)},
		{"mark all uploaded", mark(812)},
		{"uploaded count", count},
		{"a refill of 50", getOrGen(50)},
		{"one for a retry receipt", func(p store.PreKeyStore) (any, error) {
			k, err := p.GenOnePreKey(ctx)
			if err != nil {
				return nil, err
			}
			return k.KeyID, nil
		}},
		{"the refill again, the retry's key left out", getOrGen(50)},
		{"a used key removed", func(p store.PreKeyStore) (any, error) { return nil, p.RemovePreKey(ctx, 813) }},
		{"more than stored", getOrGen(60)},
		{"mark part", mark(840)},
		{"uploaded count after", count},
	}
	for _, st := range steps {
		want, wantErr := st.do(ref.PreKeys)
		got, err := st.do(batched)
		if err != nil || wantErr != nil {
			t.Fatalf("%s: batched %v, whatsmeow's %v", st.what, err, wantErr)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: batched %v, whatsmeow's %v", st.what, got, want)
		}
	}
	if got, want := preKeyRows(t, db, dev.ID.String()), preKeyRows(t, db, ref.ID.String()); !maps(got, want) {
		t.Errorf("rows stored: batched %d, whatsmeow's %d, or their ids or flags differ", len(got), len(want))
	}

	// The keys returned are the keys stored, whoever reads them.
	ks, err := batched.GetOrGenPreKeys(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ids(ks), []uint32{841, 842, 843, 844, 845}) {
		t.Fatalf("unuploaded keys = %v", ids(ks))
	}
	for _, k := range ks {
		stored, err := dev.PreKeys.GetPreKey(ctx, k.KeyID)
		if err != nil || stored == nil || *stored.Priv != *k.Priv {
			t.Errorf("key %d as stored differs from the one returned (%v)", k.KeyID, err)
		}
	}
}

func maps(a, b map[uint32]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// A replica without the lease writes no prekey: the fence refuses the
// batch whole.
func TestPreKeysFenced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	uri := pgtest.DB(t)
	db, s := openSessions(t, uri, "a")
	dev := linkSession(t, db, s, "dev", "628333:3@s.whatsapp.net")
	setLease(t, db, "dev", "b")
	if _, err := s.PreKeys(*dev.ID, dev.PreKeys).GetOrGenPreKeys(ctx, 812); !postgres.Fenced(err) {
		t.Fatalf("GetOrGenPreKeys without the lease = %v, want the fence's error", err)
	}
	if rows := preKeyRows(t, db, dev.ID.String()); len(rows) != 0 {
		t.Errorf("%d prekeys stored by a replica without the lease", len(rows))
	}
	setLease(t, db, "dev", "a")
	ks, err := s.PreKeys(*dev.ID, dev.PreKeys).GetOrGenPreKeys(ctx, 812)
	if err != nil || !slices.Equal(ids(ks), span(1, 812)) {
		t.Fatalf("with the lease: %d keys, %v", len(ks), err)
	}
}

// GenOnePreKey (a retry receipt) and GetOrGenPreKeys (an upload) at once
// never number two keys alike.
func TestPreKeysNumberingUnderConcurrency(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, s := openSessions(t, pgtest.DB(t), "a")
	dev := linkSession(t, db, s, "dev", "628333:4@s.whatsapp.net")
	setLease(t, db, "dev", "a")
	p := s.PreKeys(*dev.ID, dev.PreKeys)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for range 4 {
		wg.Go(func() {
			for range 5 {
				ks, err := p.GetOrGenPreKeys(ctx, 30)
				if err == nil {
					err = p.MarkPreKeysAsUploaded(ctx, ks[len(ks)-1].KeyID)
				}
				if err != nil {
					errs <- err
				}
			}
		})
		wg.Go(func() {
			for range 5 {
				if _, err := p.GenOnePreKey(ctx); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	rows := preKeyRows(t, db, dev.ID.String())
	if len(rows) < 4*5+30 {
		t.Errorf("%d prekeys stored", len(rows))
	}
}

// BenchmarkPreKeys times a first login's upload (812 prekeys) to a leased
// session, whatsmeow's store beside the batched one, interleaved so that
// a busy machine weighs on both alike. ms/op is per upload.
func BenchmarkPreKeys(b *testing.B) {
	ctx := context.Background()
	db, err := postgres.Open(ctx, pgtest.DB(b), postgres.Options{Holder: "a"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(db.Close)
	s, err := postgres.OpenSessions(ctx, db, nil)
	if err != nil {
		b.Fatal(err)
	}
	modes := []string{"whatsmeow", "batched"}
	stores := map[string][]store.PreKeyStore{}
	for range b.N {
		for _, mode := range modes {
			n := writeRound.Add(1)
			id := fmt.Sprintf("%s%d", mode, n)
			dev := linkSession(b, db, s, id, fmt.Sprintf("628%d:1@s.whatsapp.net", n))
			setLease(b, db, id, "a")
			p := dev.PreKeys
			if mode == "batched" {
				p = s.PreKeys(*dev.ID, p)
			}
			stores[mode] = append(stores[mode], p)
		}
	}
	spent := map[string]time.Duration{}
	b.ResetTimer()
	for i := range b.N {
		for _, mode := range modes {
			start := time.Now()
			if _, err := stores[mode][i].GetOrGenPreKeys(ctx, 812); err != nil {
				b.Fatal(err)
			}
			spent[mode] += time.Since(start)
		}
	}
	b.StopTimer()
	for _, mode := range modes {
		b.ReportMetric(float64(spent[mode].Microseconds())/1000/float64(b.N), mode+"-ms/op")
	}
	b.ReportMetric(0, "ns/op")
}
