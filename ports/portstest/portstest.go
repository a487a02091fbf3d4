// Package portstest holds one contract test suite per port. Every
// implementation runs the same suite, the in-memory fakes of the domain's
// tests as well as the real adapters, so that a fake cannot promise the
// domain what the real thing does not do.
package portstest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
)

// Registry runs the ports.Registry contract against registries made by
// open, a fresh empty one per call.
func Registry(t *testing.T, open func(t *testing.T) ports.Registry) {
	ctx := context.Background()
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

	t.Run("put, list in id order, replace, delete", func(t *testing.T) {
		r := open(t)
		if got, err := r.List(ctx); err != nil || len(got) != 0 {
			t.Fatalf("a new registry lists %v, %v", got, err)
		}
		for _, s := range []domain.Slot{
			{ID: "b", CreatedAt: at},
			{ID: "a", JID: "628111:3@s.whatsapp.net", CreatedAt: at},
			{ID: "c", CreatedAt: at, Ended: domain.ReasonRemovedOnPhone, EndedAt: at.Add(time.Hour)},
		} {
			if err := r.Put(ctx, s); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.Put(ctx, domain.Slot{ID: "b", JID: "628222:4@s.whatsapp.net", CreatedAt: at}); err != nil {
			t.Fatal(err)
		}
		got, err := r.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		want := []domain.Slot{
			{ID: "a", JID: "628111:3@s.whatsapp.net", CreatedAt: at},
			{ID: "b", JID: "628222:4@s.whatsapp.net", CreatedAt: at},
			{ID: "c", CreatedAt: at, Ended: domain.ReasonRemovedOnPhone, EndedAt: at.Add(time.Hour)},
		}
		if !slices.EqualFunc(got, want, sameSlot) {
			t.Fatalf("List = %+v, want %+v", got, want)
		}
		for _, w := range want {
			if s, ok, err := r.Get(ctx, w.ID); err != nil || !ok || !sameSlot(s, w) {
				t.Fatalf("Get(%s) = %+v, %v, %v; want %+v", w.ID, s, ok, err, w)
			}
		}
		if s, ok, err := r.Get(ctx, "missing"); err != nil || ok {
			t.Fatalf("Get(missing) = %+v, %v, %v; want not found", s, ok, err)
		}
		for range 2 { // deleting a missing slot is not an error
			if err := r.Delete(ctx, "b"); err != nil {
				t.Fatal(err)
			}
		}
		if got, _ := r.List(ctx); len(got) != 2 || got[0].ID != "a" || got[1].ID != "c" {
			t.Fatalf("after delete: %+v", got)
		}
		if _, ok, err := r.Get(ctx, "b"); err != nil || ok {
			t.Fatalf("Get of a deleted slot = %v, %v", ok, err)
		}
	})

	t.Run("a slot needs an id", func(t *testing.T) {
		if err := open(t).Put(ctx, domain.Slot{CreatedAt: at}); domain.ErrorCode(err) != domain.EINVALID {
			t.Fatalf("Put without an id = %v, want EINVALID", err)
		}
	})

	t.Run("a cancelled context writes nothing", func(t *testing.T) {
		r := open(t)
		done, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.Put(done, domain.Slot{ID: "x", CreatedAt: at}); err == nil {
			t.Error("Put with a cancelled context succeeded")
		}
		if err := r.Delete(done, "x"); err == nil {
			t.Error("Delete with a cancelled context succeeded")
		}
		if got, _ := r.List(ctx); len(got) != 0 {
			t.Errorf("a cancelled Put wrote %+v", got)
		}
	})
}

func sameSlot(a, b domain.Slot) bool {
	return a.ID == b.ID && a.JID == b.JID && a.CreatedAt.Equal(b.CreatedAt) && a.Ended == b.Ended && a.EndedAt.Equal(b.EndedAt)
}

// SessionJID is the companion JID the SessionStore suite promotes its
// pairings to. A store whose sessions know their own JID (PostgreSQL's)
// makes fill's session one of this JID, as the phone would.
const SessionJID = "628123456789:12@s.whatsapp.net"

// SessionStore runs the ports.SessionStore contract against stores made by
// open, a fresh empty one per call. fill makes the pairing session key
// hold a session, as the WhatsApp adapter does when it opens it and the
// phone links it (as SessionJID).
func SessionStore(t *testing.T, open func(t *testing.T) (ports.SessionStore, func(t *testing.T, key string))) {
	const jid = SessionJID

	t.Run("pair, promote, list, delete", func(t *testing.T) {
		s, fill := open(t)
		key, err := s.NewPairing("phone-1")
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(key, `/\`) || key == jid {
			t.Errorf("NewPairing = %q: a key names a session, it is no path", key)
		}
		if err := s.Promote(key, jid); err == nil {
			t.Error("Promote moved a pairing that holds no session")
		}
		fill(t, key)
		assertStored(t, s, []ports.StoredSession{{Key: key, DeviceID: "phone-1"}})
		if err := s.Promote(key, jid); err != nil {
			t.Fatal(err)
		}
		assertStored(t, s, []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "phone-1"}})
		if err := s.Promote(key, jid); err == nil {
			t.Error("a pairing was promoted twice")
		}
		// A second pairing replaces the session of the same JID.
		again, err := s.NewPairing("phone-2")
		if err != nil {
			t.Fatal(err)
		}
		if again == key {
			t.Errorf("NewPairing gave the same key twice: %q", key)
		}
		fill(t, again)
		if err := s.Promote(again, jid); err != nil {
			t.Fatal(err)
		}
		assertStored(t, s, []ports.StoredSession{{JID: jid, Key: jid, DeviceID: "phone-2"}})
		for range 2 { // deleting a missing session is not an error
			if err := s.Delete(jid); err != nil {
				t.Fatal(err)
			}
		}
		assertStored(t, s, nil)
	})

	t.Run("discard", func(t *testing.T) {
		s, fill := open(t)
		key, err := s.NewPairing("d")
		if err != nil {
			t.Fatal(err)
		}
		fill(t, key)
		for range 2 { // discarding a missing pairing is not an error
			if err := s.Discard(key); err != nil {
				t.Fatal(err)
			}
		}
		assertStored(t, s, nil)
	})

	t.Run("only its own keys and companion JIDs", func(t *testing.T) {
		s, fill := open(t)
		key, err := s.NewPairing("d")
		if err != nil {
			t.Fatal(err)
		}
		fill(t, key)
		for _, bad := range []string{"", "..", "../x", "628123@g.us", "abc@s.whatsapp.net", "a/b@s.whatsapp.net", "/etc/passwd"} {
			if err := s.Delete(bad); domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("Delete(%q) = %v, want EINVALID", bad, err)
			}
			if err := s.Promote(key, bad); domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("Promote(_, %q) = %v, want EINVALID", bad, err)
			}
			if err := s.Discard(bad); domain.ErrorCode(err) != domain.EINVALID {
				t.Errorf("Discard(%q) = %v, want EINVALID", bad, err)
			}
		}
		if err := s.Promote(jid, jid); err == nil {
			t.Error("Promote took a linked session's key for a pairing")
		}
		if _, err := s.NewPairing("../x"); domain.ErrorCode(err) != domain.EINVALID {
			t.Errorf("NewPairing(../x) = %v, want EINVALID", err)
		}
		assertStored(t, s, []ports.StoredSession{{Key: key, DeviceID: "d"}})
	})
}

func assertStored(t *testing.T, s ports.SessionStore, want []ports.StoredSession) {
	t.Helper()
	got, err := s.Sessions()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Sessions = %+v, want %+v", got, want)
	}
}

// ClientEnv is what the Client suite needs of a WhatsApp implementation.
type ClientEnv struct {
	// Unpaired opens a fresh session that was never paired. events
	// returns what the client reported so far.
	Unpaired func(t *testing.T) (c ports.Client, events func() []domain.Event)
	// Linked opens a session that is linked but not connected.
	Linked func(t *testing.T) (c ports.Client, events func() []domain.Event)
	// Online connects a Linked client and waits until it reported
	// Connected.
	Online func(t *testing.T, c ports.Client)
	// Disturb makes the network act on c's connection (drops it), as
	// something that would make a client report an event.
	Disturb func(t *testing.T, c ports.Client)
}

// Client runs the ports.Client contract.
func Client(t *testing.T, env ClientEnv) {
	ctx := context.Background()

	t.Run("an unpaired session has no identity and cannot connect or log out", func(t *testing.T) {
		c, _ := env.Unpaired(t)
		if id, ok := c.Identity(); ok {
			t.Errorf("an unpaired session has identity %+v", id)
		}
		if err := c.Connect(ctx); domain.ErrorCode(err) != domain.ECONFLICT {
			t.Errorf("Connect of an unpaired session = %v, want ECONFLICT", err)
		}
		if err := c.Logout(ctx); domain.ErrorCode(err) != domain.ECONFLICT {
			t.Errorf("Logout of an unpaired session = %v, want ECONFLICT", err)
		}
	})

	t.Run("logout needs the connection, and keeps the session without it", func(t *testing.T) {
		c, _ := env.Linked(t)
		if _, ok := c.Identity(); !ok {
			t.Fatal("a linked session has no identity")
		}
		err := c.Logout(ctx)
		if code := domain.ErrorCode(err); code != domain.EUNAVAILABLE && code != domain.ETIMEOUT {
			t.Errorf("Logout while not connected = %v, want EUNAVAILABLE or ETIMEOUT", err)
		}
		if _, ok := c.Identity(); !ok {
			t.Error("a logout that did not reach WhatsApp dropped the session")
		}
	})

	t.Run("nothing is reported after Close", func(t *testing.T) {
		c, events := env.Linked(t)
		env.Online(t, c)
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		n := len(events())
		env.Disturb(t, c)
		if err := c.Close(); err != nil {
			t.Errorf("a second Close: %v", err)
		}
		if got := events(); len(got) != n {
			t.Errorf("events after Close: %#v", got[n:])
		}
	})
	t.Run("logout while connected unlinks", func(t *testing.T) {
		c, _ := env.Linked(t)
		env.Online(t, c)
		if err := c.Logout(ctx); err != nil {
			t.Fatalf("Logout: %v", err)
		}
		if _, ok := c.Identity(); ok {
			t.Error("the session kept its identity after logging out")
		}
	})

}
