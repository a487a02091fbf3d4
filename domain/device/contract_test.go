package device

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/gowa-dev/gowa/domain"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

// The fakes pass the same contracts as the real adapters (adapters/sqlite
// runs them too), so that they cannot promise the service more than the
// real ones do.

func TestFakeRegistryContract(t *testing.T) {
	portstest.Registry(t, func(*testing.T) ports.Registry { return newFakeRegistry() })
}

func TestFakeSessionStoreContract(t *testing.T) {
	portstest.SessionStore(t, func(*testing.T) (ports.SessionStore, func(*testing.T, string)) {
		disk := newFakeDisk()
		wa := &fakeWhatsApp{disk: disk, clock: &fakeClock{}}
		return disk, func(t *testing.T, key string) {
			c, err := wa.Open(context.Background(), key, func(domain.Event) {})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		}
	})
}

func TestFakeClientContract(t *testing.T) {
	const jid = "628123456789:12@s.whatsapp.net"
	open := func(t *testing.T, disk *fakeDisk, key string) (ports.Client, func() []domain.Event) {
		wa := &fakeWhatsApp{disk: disk, clock: &fakeClock{}}
		var mu sync.Mutex
		var evs []domain.Event
		c, err := wa.Open(t.Context(), key, func(ev domain.Event) {
			mu.Lock()
			evs = append(evs, ev)
			mu.Unlock()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, func() []domain.Event {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(evs)
		}
	}
	portstest.Client(t, portstest.ClientEnv{
		Unpaired: func(t *testing.T) (ports.Client, func() []domain.Event) {
			disk := newFakeDisk()
			key, err := disk.NewPairing("d")
			if err != nil {
				t.Fatal(err)
			}
			return open(t, disk, key)
		},
		Linked: func(t *testing.T) (ports.Client, func() []domain.Event) {
			disk := newFakeDisk()
			disk.putLinked("d", jid)
			return open(t, disk, jid)
		},
		Online: func(t *testing.T, c ports.Client) {
			if err := c.Connect(t.Context()); err != nil {
				t.Fatal(err)
			}
		},
		Disturb: func(t *testing.T, c ports.Client) { c.(*fakeClient).emit(domain.Disconnected{}) },
	})
}
