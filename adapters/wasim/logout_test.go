package wasim_test

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"go.mau.fi/whatsmeow/types/events"

	"github.com/gowa-dev/gowa/domain"
)

// The client logs out itself (checklist #6): the phone no longer lists the
// device and the session is gone.
func TestClientLogout(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	c, _ := linkByQR(t, srv, alice, dbPath(t))

	if err := c.cli.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if c.cli.Store.ID != nil || c.cli.IsConnected() {
		t.Fatalf("after logout: ID %v, connected %v", c.cli.Store.ID, c.cli.IsConnected())
	}
	if devs, _ := srv.Devices(ctx, alice); len(devs) != 0 {
		t.Fatalf("the phone still lists %+v", devs)
	}
	if n := c.storedDevices(); n != 0 {
		t.Fatalf("%d sessions left in the database", n)
	}
	// The server forgets the device before it answers the logout.
	if conns, _ := srv.Connections(ctx); conns.LoggedIn != 0 {
		t.Fatalf("logged-in connections after logout: %+v", conns)
	}
}

// The phone removes a connected device (checklist #4): whatsmeow reports
// LoggedOut and deletes its session.
func TestRemovedWhileConnected(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	c, jid := linkByQR(t, srv, alice, dbPath(t))

	wantCode(t, srv.RemoveDevice(ctx, bob, jid), domain.ENOTFOUND)
	wantCode(t, srv.RemoveDevice(ctx, alice, alice+":99@s.whatsapp.net"), domain.ENOTFOUND)
	if err := srv.RemoveDevice(ctx, alice, jid); err != nil {
		t.Fatalf("remove: %v", err)
	}
	lo := waitFor[*events.LoggedOut](t, c)
	if lo.OnConnect || lo.Reason != events.ConnectFailureLoggedOut {
		t.Fatalf("LoggedOut %+v, want OnConnect false, reason 401", lo)
	}
	// whatsmeow dispatches LoggedOut before it deletes the session.
	eventually(t, "session deleted", func() bool { return c.storedDevices() == 0 })
	if devs, _ := srv.Devices(ctx, alice); len(devs) != 0 {
		t.Fatalf("the phone still lists %+v", devs)
	}
	// The removed device's socket is closed (or closing), not only forgotten.
	eventually(t, "the removed device's connection closed", func() bool {
		conns, _ := srv.Connections(ctx)
		return conns.Open == 0 && conns.ByDevice[jid] == 0
	})
	wantCode(t, srv.RemoveDevice(ctx, alice, jid), domain.ENOTFOUND)
}

// The phone removes a device while it is offline (checklist #5): its next
// login fails with 401.
func TestRemovedWhileOffline(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	c, jid := linkByQR(t, srv, alice, dbPath(t))
	c.cli.Disconnect()
	if err := srv.RemoveDevice(ctx, alice, jid); err != nil {
		t.Fatalf("remove: %v", err)
	}
	if err := c.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	lo := waitFor[*events.LoggedOut](t, c)
	if !lo.OnConnect || lo.Reason != events.ConnectFailureLoggedOut {
		t.Fatalf("LoggedOut %+v, want OnConnect true, reason 401", lo)
	}
	eventually(t, "session deleted", func() bool { return c.storedDevices() == 0 })
}

// A second connection of the same device replaces the first (checklist
// #14), which gets StreamReplaced; one connection remains.
func TestStreamReplaced(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := newServer(t, "")
	createPhone(t, srv, alice, "Alice")
	path := dbPath(t)
	first, jid := linkByQR(t, srv, alice, path)
	if conns, _ := srv.Connections(ctx); conns.MaxByDevice[jid] != 1 {
		t.Fatalf("most simultaneous connections after linking: %d, want 1", conns.MaxByDevice[jid])
	}

	copyPath := filepath.Join(t.TempDir(), "copy.db")
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	_, err = db.Exec(`VACUUM INTO ?`, copyPath)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	second := newClient(t, srv, copyPath)
	if err := second.cli.Connect(); err != nil {
		t.Fatal(err)
	}
	waitFor[*events.Connected](t, second)
	waitFor[*events.StreamReplaced](t, first)
	conns, _ := srv.Connections(ctx)
	if conns.ByDevice[jid] != 1 || conns.LoggedIn != 1 {
		t.Fatalf("connections after replacement %+v", conns)
	}
	// The replacement had two live connections as one device: the figure
	// that proves "never two" must show it.
	if conns.MaxByDevice[jid] != 2 {
		t.Fatalf("most simultaneous connections after a replacement: %d, want 2", conns.MaxByDevice[jid])
	}
	if !second.cli.IsLoggedIn() || first.storedDevices() != 1 {
		t.Fatal("the replaced client lost its session, or the new one is not logged in")
	}
}
