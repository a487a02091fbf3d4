package postgres

import (
	"context"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
	"go.mau.fi/whatsmeow/store"
	"go.mau.fi/whatsmeow/types"
	"go.mau.fi/whatsmeow/util/keys"
)

// PreKeys returns the prekey store for the session of jid: whatsmeow's own
// (inner, the session's sqlstore), except that GetOrGenPreKeys writes the
// keys it generates in one statement. whatsmeow's inserts them one
// statement, and one transaction, each: on a first login it generates 812,
// which made 812 round trips to the database and 812 commits (on loopback,
// about 160 ms of PostgreSQL's CPU per login against about 15 ms in one
// statement; over a network, each round trip adds its latency). The rows
// are the ones whatsmeow writes (whatsmeow_pre_keys, uploaded = false,
// numbered on from the session's highest key id), and the fence checks
// each of them as it does whatsmeow's.
//
// GenOnePreKey goes through the same lock as GetOrGenPreKeys, as in
// whatsmeow's store, so the two never number a key alike.
func (s *Sessions) PreKeys(jid types.JID, inner store.PreKeyStore) store.PreKeyStore {
	return &preKeys{PreKeyStore: inner, db: s.db, jid: jid.String()}
}

type preKeys struct {
	store.PreKeyStore
	db  *DB
	jid string
	mu  sync.Mutex // numbering: GetOrGenPreKeys and GenOnePreKey
}

// maxPreKeyID is one past the highest key id whatsmeow_pre_keys accepts
// (its CHECK: 24 bits, as Signal's prekey ids).
const maxPreKeyID = 1 << 24

// GetOrGenPreKeys returns count keys not yet uploaded: those stored, by
// key id, then new ones, stored first, in one transaction.
func (p *preKeys) GetOrGenPreKeys(ctx context.Context, count uint32) ([]*keys.PreKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*keys.PreKey
	err := pgx.BeginFunc(ctx, p.db.Pool, func(tx pgx.Tx) error {
		out = out[:0]
		rows, err := tx.Query(ctx, `SELECT key_id, key FROM whatsmeow_pre_keys WHERE jid = $1 AND uploaded = false ORDER BY key_id LIMIT $2`, p.jid, int64(count))
		if err != nil {
			return err
		}
		for rows.Next() {
			var id int64
			var priv []byte
			if err := rows.Scan(&id, &priv); err != nil {
				rows.Close()
				return err
			}
			if len(priv) != 32 {
				rows.Close()
				return fmt.Errorf("prekey %d of %s: %d bytes, want 32", id, p.jid, len(priv))
			}
			out = append(out, &keys.PreKey{KeyPair: *keys.NewKeyPairFromPrivateKey([32]byte(priv)), KeyID: uint32(id)})
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if uint32(len(out)) >= count {
			return nil
		}
		var last int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(max(key_id), 0) FROM whatsmeow_pre_keys WHERE jid = $1`, p.jid).Scan(&last); err != nil {
			return err
		}
		missing := int(count) - len(out)
		if last+int64(missing) >= maxPreKeyID {
			return fmt.Errorf("prekey ids of %s exhausted (last %d)", p.jid, last)
		}
		ids := make([]int64, missing)
		privs := make([][]byte, missing)
		for i := range missing {
			k := keys.NewPreKey(uint32(last) + 1 + uint32(i))
			ids[i], privs[i] = int64(k.KeyID), k.Priv[:]
			out = append(out, k)
		}
		_, err = tx.Exec(ctx, `
			INSERT INTO whatsmeow_pre_keys (jid, key_id, key, uploaded)
			SELECT $1, u.id, u.key, false FROM unnest($2::integer[], $3::bytea[]) AS u(id, key)`, p.jid, ids, privs)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("get or generate prekeys: %w", fenced(Unavailable(err)))
	}
	return out, nil
}

// GenOnePreKey is whatsmeow's, under the numbering lock.
func (p *preKeys) GenOnePreKey(ctx context.Context) (*keys.PreKey, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.PreKeyStore.GenOnePreKey(ctx)
}
