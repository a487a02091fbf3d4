package wasim

import (
	"context"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/domain"
)

// Disrupt applies a network fault for sandbox.Network: it starts refusing new
// connections first, so that clients whose sockets it then drops meet the
// refusal on their first reconnect. It returns how many connections it
// dropped.
func (s *Server) Disrupt(_ context.Context, f sandbox.NetworkFault) (int, error) {
	if f.Refuse < 0 {
		return 0, domain.Errorf(domain.EINVALID, "refusal must not be negative")
	}
	if f.Refuse > 0 {
		s.RefuseConnections(f.Refuse)
	}
	if !f.Drop {
		return 0, nil
	}
	return s.DropConnections(""), nil
}
