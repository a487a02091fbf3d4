package wasim

import (
	"context"
	"maps"
	"strings"

	waBinary "go.mau.fi/whatsmeow/binary"
	"go.mau.fi/whatsmeow/types"

	"github.com/gowa-dev/gowa/adapters/sandbox"
	"github.com/gowa-dev/gowa/domain"
)

// CreatePhone creates the simulated account of phone (7 to 15 digits, an
// optional + before them), or returns the existing one, renamed when
// pushName is given.
func (s *Server) CreatePhone(ctx context.Context, phone, pushName string) (sandbox.Phone, error) {
	a, err := s.world.createAccount(ctx, phone, pushName)
	if err != nil {
		return sandbox.Phone{}, err
	}
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	return sandbox.Phone{Phone: a.phone, PushName: a.pushName, JID: a.jid().String()}, nil
}

// Devices lists the companion devices linked to phone, oldest first.
func (s *Server) Devices(ctx context.Context, phone string) ([]sandbox.Device, error) {
	a, err := s.world.account(phone)
	if err != nil {
		return nil, err
	}
	ds := s.world.companions(a.phone)
	out := make([]sandbox.Device, 0, len(ds))
	for _, d := range ds {
		jid := d.jid.String()
		out = append(out, sandbox.Device{JID: jid, LinkedAt: d.linkedAt, Online: len(s.connsOf(jid)) > 0})
	}
	return out, nil
}

// RemoveDevice unlinks a companion device from phone, as "Log out" in the
// phone's linked-devices screen does. A connected device is told at once
// (stream error 401 device_removed, which whatsmeow reports as LoggedOut
// and answers by deleting its session); a device that is offline gets
// failure 401 at its next login.
func (s *Server) RemoveDevice(ctx context.Context, phone, jid string) error {
	a, err := s.world.account(phone)
	if err != nil {
		return err
	}
	dev, err := types.ParseJID(strings.TrimSpace(jid))
	if err != nil {
		return domain.Errorf(domain.EINVALID, "not a device JID")
	}
	if dev.User != a.phone || dev.Server != types.DefaultUserServer || dev.Device == 0 {
		return domain.Errorf(domain.ENOTFOUND, "%s has no linked device %s", a.phone, dev.String())
	}
	removed, err := s.world.markRemoved(ctx, dev)
	if err != nil {
		return domain.Wrap(domain.EINTERNAL, err, "removing the device")
	}
	if !removed {
		return domain.Errorf(domain.ENOTFOUND, "%s has no linked device %s", a.phone, dev.String())
	}
	for _, c := range s.connsOf(dev.String()) {
		c.setDevice("")
		if err := c.send(waBinary.Node{
			Tag:     "stream:error",
			Attrs:   waBinary.Attrs{"code": "401"},
			Content: []waBinary.Node{{Tag: "conflict", Attrs: waBinary.Attrs{"type": "device_removed"}}},
		}); err != nil {
			c.log.Debug("wasim: send device_removed", "err", err)
		}
		c.closeSoon()
	}
	s.log.Info("wasim: phone removed a device", "phone", a.phone, "device", dev.String())
	return nil
}

// Messages lists the texts phone received, and its own copies of texts
// its linked devices sent (FromMe, Chat = the recipient), oldest first.
func (s *Server) Messages(ctx context.Context, phone string) ([]sandbox.Message, error) {
	a, err := s.world.account(phone)
	if err != nil {
		return nil, err
	}
	ms, err := s.world.messages(ctx, a.phone)
	if err != nil {
		return nil, domain.Wrap(domain.EINTERNAL, err, "reading the inbox")
	}
	out := make([]sandbox.Message, 0, len(ms))
	for _, m := range ms {
		out = append(out, sandbox.Message{
			From: m.sender.String(), ID: m.id, Timestamp: m.ts, Text: m.text, Chat: m.chat.String(), FromMe: m.fromMe,
		})
	}
	return out, nil
}

// Connections counts the websockets open to the server, leaving out those
// it is closing (after a removal, a replacement or a drop), the logged-in
// ones by device JID, every connection attempt since New, and per device
// the most connections logged in as it at once since New (a login that
// replaced a live connection counts both).
func (s *Server) Connections(ctx context.Context) (sandbox.Connections, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := sandbox.Connections{ByDevice: map[string]int{}, Attempts: s.attempts, MaxByDevice: maps.Clone(s.maxByDevice)}
	for c := range s.conns {
		if c.isClosing() {
			continue
		}
		out.Open++
		if jid := c.deviceJID(); jid != "" {
			out.LoggedIn++
			out.ByDevice[jid]++
		}
	}
	return out, nil
}
