package wasim

// PreKeyCount returns how many one-time prekeys the server holds for the
// device jid; tests check the client's uploads with it.
func (s *Server) PreKeyCount(jid string) int {
	s.world.mu.Lock()
	defer s.world.mu.Unlock()
	if d := s.world.devices[jid]; d != nil {
		return d.prekeys
	}
	return 0
}
