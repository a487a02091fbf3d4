package domain

import "time"

// SandboxPhone is a simulated WhatsApp account of the sandbox.
type SandboxPhone struct {
	Phone    string // digits
	PushName string
	JID      string // the account's own JID, device 0
}

// SandboxDevice is a companion device linked to a simulated account.
type SandboxDevice struct {
	JID      string
	LinkedAt time.Time
	Online   bool // has an open, logged-in connection now
}

// SandboxMessage is a text a simulated account received.
type SandboxMessage struct {
	From      string // the sender's device JID
	ID        string
	Timestamp time.Time
	Text      string
	// Chat is who the conversation is with: the sender for a received
	// message, the recipient for the account's own copy of a message one of
	// its linked devices sent.
	Chat string
	// FromMe marks the copy of a message sent by one of the account's own
	// linked devices.
	FromMe bool
}

// SandboxSent is what a simulated phone's send did: the message id and
// time, and which linked devices got it now or will at their next login.
type SandboxSent struct {
	ID        string
	Timestamp time.Time
	Delivered []string // device JIDs online, which acknowledged it
	Offline   []string // device JIDs that get it when they next log in
}

// SandboxConnections counts the connections open to the simulated server.
type SandboxConnections struct {
	Open     int            // every open websocket
	LoggedIn int            // of those, the ones logged in as a device
	ByDevice map[string]int // logged-in connections by device JID
	Attempts int            // connection attempts since start, refused ones included
}

// NetworkFault breaks the simulated network on purpose.
type NetworkFault struct {
	Drop   bool          // drop every open connection now
	Refuse time.Duration // then refuse new connections for this long
}
