package sqlite_test

import (
	"testing"

	"github.com/gowa-dev/gowa/adapters/sqlite"
	"github.com/gowa-dev/gowa/ports"
	"github.com/gowa-dev/gowa/ports/portstest"
)

// The ports' contracts, which the domain's fakes pass too.

func TestRegistryContract(t *testing.T) {
	t.Parallel()
	portstest.Registry(t, func(t *testing.T) ports.Registry { return openRegistry(t, t.TempDir()) })
}

func TestSessionStoreContract(t *testing.T) {
	t.Parallel()
	portstest.SessionStore(t, func(t *testing.T) (ports.SessionStore, func(*testing.T, string)) {
		s := newSessions(t, t.TempDir())
		return s, func(t *testing.T, key string) { writeSession(t, locate(t, s, key), "paired") }
	})
}

var (
	_ ports.Registry     = (*sqlite.Registry)(nil)
	_ ports.SessionStore = (*sqlite.Sessions)(nil)
)
