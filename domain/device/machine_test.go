package device

import (
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/domain"
)

// The lifecycle table, checked pair by pair: every state the machine can
// be in, against every input it can get. A pair listed in accepted must
// give that outcome; every other pair must change nothing, and a command
// among them must be refused with ECONFLICT naming the state. No fakes: the
// machine is data in, data out.

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

const (
	jidM  = "628123456789:12@s.whatsapp.net"
	opCmd = 7 // the op of the command under test
	opOld = 3 // the op of a caller already waiting
)

// machines are one representative machine per state (and per variant of
// a state that accepts different inputs).
func machines() map[string]machine {
	base := machine{ID: "d", Since: t0, Seq: 4}
	linked := base
	linked.JID, linked.Identity = jidM, domain.Identity{JID: jidM, Phone: "628123456789"}
	with := func(m machine, f func(*machine)) machine { f(&m); return m }
	return map[string]machine{
		"disconnected": with(base, func(m *machine) { m.State = domain.StateDisconnected }),
		"pairing": with(base, func(m *machine) {
			m.State, m.Gen = domain.StatePairing, 4
			m.Pair = pairing{Method: domain.PairingQR, Key: "k", QR: "qr1", ExpiresAt: t0.Add(time.Minute), Started: t0, Opened: true}
		}),
		"connecting": with(linked, func(m *machine) { m.State, m.Gen = domain.StateConnecting, 4 }),
		"connected": with(linked, func(m *machine) {
			m.State, m.Gen, m.Online = domain.StateConnected, 4, true
			m.Told = told{Type: domain.EventDeviceConnected}
		}),
		"offline": with(linked, func(m *machine) {
			m.State, m.Reason, m.Gen = domain.StateOffline, domain.ReasonStreamReplaced, 4
			m.Told = told{domain.EventDeviceDisconnected, domain.ReasonStreamReplaced}
		}),
		"unlinking": with(linked, func(m *machine) {
			m.State, m.Reason, m.Gen = domain.StateUnlinking, domain.ReasonLogout, 4
			m.Unlink = unlink{Phase: unlinkWaitOnline, Reason: domain.ReasonLogout, Timer: 3, From: domain.StateConnecting}
			m.Waiters = []waiter{{Op: opOld, Kind: waitLogout}}
		}),
		"logged_out": with(base, func(m *machine) {
			m.State, m.Reason = domain.StateLoggedOut, domain.ReasonRemovedOnPhone
			m.Told = told{domain.EventDeviceLoggedOut, domain.ReasonRemovedOnPhone}
		}),
		"logged_out_files": with(linked, func(m *machine) {
			m.State, m.Reason = domain.StateLoggedOut, domain.ReasonSessionUnreadable
			m.Told = told{domain.EventDeviceLoggedOut, domain.ReasonSessionUnreadable}
		}),
	}
}

// inputs are every input, those of clients and jobs addressed to client 4
// (the current one wherever there is one).
var inputs = map[string]input{
	"start":            start{},
	"login_qr":         cmdLogin{Op: opCmd, Method: domain.PairingQR},
	"login_code":       cmdLogin{Op: opCmd, Method: domain.PairingCode, Phone: "628111111111"},
	"logout":           cmdLogout{Op: opCmd},
	"delete":           cmdDelete{Op: opCmd},
	"reconnect":        cmdReconnect{Op: opCmd},
	"shutdown":         cmdShutdown{},
	"drop":             cmdShutdown{Drop: true},
	"ev_qr":            clientEvent{Gen: 4, Event: domain.QRCode{Code: "qr2", Timeout: 20 * time.Second}},
	"ev_paired":        clientEvent{Gen: 4, Event: domain.Paired{Identity: domain.Identity{JID: jidM}}},
	"ev_pairing_exp":   clientEvent{Gen: 4, Event: domain.PairingExpired{}},
	"ev_pairing_fail":  clientEvent{Gen: 4, Event: domain.PairingFailed{Reason: "x"}},
	"ev_connected":     clientEvent{Gen: 4, Event: domain.Connected{}, Identity: domain.Identity{JID: jidM, PushName: "Ana"}},
	"ev_disconnected":  clientEvent{Gen: 4, Event: domain.Disconnected{}},
	"ev_logged_out":    clientEvent{Gen: 4, Event: domain.LoggedOut{Reason: domain.ReasonRemovedOnPhone}},
	"ev_offline":       clientEvent{Gen: 4, Event: domain.Offline{Reason: domain.ReasonTemporaryBan, Detail: "banned for 1h"}},
	"ev_push_name":     clientEvent{Gen: 4, Event: domain.PushNameChanged{PushName: "Bo"}},
	"ev_stale":         clientEvent{Gen: 2, Event: domain.LoggedOut{Reason: domain.ReasonRemovedOnPhone}},
	"pairing_opened":   pairingOpened{Gen: 4, Key: "k"},
	"pairing_open_err": pairingOpened{Gen: 4, Key: "k", Err: errBoom},
	"code_given":       codeGiven{Gen: 4, Phone: "628111111111", Code: "ABCD-1234", ExpiresAt: t0.Add(time.Minute)},
	"code_err":         codeGiven{Gen: 4, Phone: "628111111111", Err: errUnreachable},
	"promoted":         promoted{Gen: 4},
	"promote_err":      promoted{Gen: 4, Err: errBoom},
	"discarded":        discarded{Gen: 4},
	"opened":           opened{Gen: 4, Linked: true},
	"opened_stale":     opened{Gen: 2, Linked: true},
	"opened_unlinked":  opened{Gen: 4},
	"opened_err":       opened{Gen: 4, Err: errBoom},
	"connect_failed":   connectFailed{Gen: 4, Err: errUnreachable},
	"logout_done":      loggedOutDone{Gen: 4},
	"logout_err":       loggedOutDone{Gen: 4, Err: errUnreachable},
	"removed":          removed{},
	"removed_err":      removed{Err: errBoom},
	"slot_deleted":     slotDeleted{FilesGone: true},
	"timer":            timerFired{Seq: 3},
	"ping":             ping{Op: opCmd},
	"created":          created{Op: opCmd},
	"ev_message":       clientEvent{Gen: 4, Event: domain.IncomingMessage{Message: domain.MessageEventData{ID: "M1", Type: "text", Text: "hi"}, Done: func() {}}},
	"ev_message_stale": clientEvent{Gen: 2, Event: domain.IncomingMessage{Message: domain.MessageEventData{ID: "M1", Type: "text", Text: "hi"}, Done: func() {}}},
}

// outcome is what a pair must give: the state and reason after it, the
// effects by type name in order, and the error codes of the replies
// ("ok" for a reply without error), in order.
type outcome struct {
	state   domain.State
	reason  domain.Reason
	effects string
	replies string
}

var accepted = map[[2]string]outcome{
	{"*", "shutdown"}: {"", "", "", ""}, // checked on its own below
	{"*", "drop"}:     {"", "", "", ""}, // the same
	{"*", "ping"}:     {"", "", "reply", "ok"},
	{"*", "created"}:  {"", "", "reply", "ok"},
	// A message of the current client is told in any state; of a stale
	// one, only acknowledged (that client is closed: the acknowledgement
	// goes nowhere, and WhatsApp sends it again).
	{"*", "ev_message"}:       {"", "", "ackWritten", ""},
	{"*", "ev_message_stale"}: {"", "", "ackWritten", ""},

	{"connecting", "start"}:                  {domain.StateConnecting, "", "closeClient connect", ""},
	{"pairing", "opened_stale"}:              {domain.StatePairing, "", "closeClient", ""},
	{"disconnected", "opened_stale"}:         {domain.StateDisconnected, "", "closeClient", ""},
	{"logged_out", "opened_stale"}:           {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient", ""},
	{"logged_out_files", "opened_stale"}:     {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient", ""},
	{"disconnected", "pairing_opened"}:       {domain.StateDisconnected, "", "closeClient discard", ""},
	{"disconnected", "pairing_open_err"}:     {domain.StateDisconnected, "", "closeClient discard", ""},
	{"disconnected", "opened"}:               {domain.StateDisconnected, "", "closeClient", ""},
	{"disconnected", "opened_unlinked"}:      {domain.StateDisconnected, "", "closeClient", ""},
	{"disconnected", "opened_err"}:           {domain.StateDisconnected, "", "closeClient", ""},
	{"logged_out", "pairing_opened"}:         {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient discard", ""},
	{"logged_out", "pairing_open_err"}:       {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient discard", ""},
	{"logged_out", "opened"}:                 {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient", ""},
	{"logged_out", "opened_unlinked"}:        {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient", ""},
	{"logged_out", "opened_err"}:             {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "closeClient", ""},
	{"logged_out_files", "pairing_opened"}:   {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient discard", ""},
	{"logged_out_files", "pairing_open_err"}: {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient discard", ""},
	{"logged_out_files", "opened"}:           {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient", ""},
	{"logged_out_files", "opened_unlinked"}:  {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient", ""},
	{"logged_out_files", "opened_err"}:       {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient", ""},

	{"disconnected", "login_qr"}:   {domain.StatePairing, "", "openPairing", ""},
	{"disconnected", "login_code"}: {domain.StatePairing, "", "openPairing", ""},
	{"disconnected", "delete"}:     {domain.StateDisconnected, "", "deleteSlot", ""},

	{"pairing", "login_qr"}:         {domain.StatePairing, "", "reply", "ok"},
	{"pairing", "login_code"}:       {domain.StatePairing, "", "askCode", ""},
	{"pairing", "logout"}:           {domain.StatePairing, "", "closeClient discard observeLogin", ""},
	{"pairing", "delete"}:           {domain.StatePairing, "", "closeClient discard observeLogin deleteSlot", ""},
	{"pairing", "ev_qr"}:            {domain.StatePairing, "", "", ""},
	{"pairing", "ev_paired"}:        {domain.StatePairing, "", "promote", ""},
	{"pairing", "ev_pairing_exp"}:   {domain.StatePairing, "", "closeClient discard observeLogin", ""},
	{"pairing", "ev_pairing_fail"}:  {domain.StatePairing, "", "closeClient discard observeLogin", ""},
	{"pairing", "pairing_opened"}:   {domain.StatePairing, "", "", ""},
	{"pairing", "pairing_open_err"}: {domain.StatePairing, "", "closeClient discard observeLogin", ""},

	{"connecting", "logout"}:          {domain.StateUnlinking, domain.ReasonLogout, "startTimer", ""},
	{"connecting", "delete"}:          {domain.StateUnlinking, domain.ReasonLogout, "startTimer", ""},
	{"connecting", "reconnect"}:       {domain.StateConnecting, "", "closeClient connect reply", "ok"},
	{"connecting", "ev_connected"}:    {domain.StateConnected, "", "", ""},
	{"connecting", "ev_logged_out"}:   {domain.StateUnlinking, domain.ReasonRemovedOnPhone, "closeClient warn remove", ""},
	{"connecting", "ev_offline"}:      {domain.StateOffline, domain.ReasonTemporaryBan, "disconnect", ""},
	{"connecting", "ev_push_name"}:    {domain.StateConnecting, "", "", ""},
	{"connecting", "opened"}:          {domain.StateConnecting, "", "", ""},
	{"connecting", "opened_stale"}:    {domain.StateConnecting, "", "closeClient", ""},
	{"connecting", "opened_unlinked"}: {domain.StateUnlinking, domain.ReasonSessionEmpty, "closeClient warn remove", ""},
	{"connecting", "opened_err"}:      {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "closeClient warn save", ""},
	{"connecting", "connect_failed"}:  {domain.StateOffline, domain.ReasonConnectFailed, "disconnect", ""},

	{"connected", "logout"}:          {domain.StateUnlinking, domain.ReasonLogout, "logout", ""},
	{"connected", "delete"}:          {domain.StateUnlinking, domain.ReasonLogout, "logout", ""},
	{"connected", "reconnect"}:       {domain.StateConnecting, "", "closeClient connect reply", "ok"},
	{"connected", "ev_connected"}:    {domain.StateConnected, "", "", ""},
	{"connected", "ev_disconnected"}: {domain.StateConnecting, domain.ReasonConnectionLost, "", ""},
	{"connected", "ev_logged_out"}:   {domain.StateUnlinking, domain.ReasonRemovedOnPhone, "closeClient warn remove", ""},
	{"connected", "ev_offline"}:      {domain.StateOffline, domain.ReasonTemporaryBan, "disconnect", ""},
	{"connected", "ev_push_name"}:    {domain.StateConnected, "", "", ""},
	{"connected", "opened_stale"}:    {domain.StateConnected, "", "closeClient", ""},
	{"connected", "connect_failed"}:  {domain.StateOffline, domain.ReasonConnectFailed, "disconnect", ""},

	{"offline", "logout"}:          {domain.StateUnlinking, domain.ReasonLogout, "closeClient connect startTimer", ""},
	{"offline", "delete"}:          {domain.StateUnlinking, domain.ReasonLogout, "closeClient connect startTimer", ""},
	{"offline", "reconnect"}:       {domain.StateConnecting, "", "closeClient connect reply", "ok"},
	{"offline", "ev_connected"}:    {domain.StateOffline, domain.ReasonStreamReplaced, "", ""},
	{"offline", "ev_logged_out"}:   {domain.StateUnlinking, domain.ReasonRemovedOnPhone, "closeClient warn remove", ""},
	{"offline", "ev_push_name"}:    {domain.StateOffline, domain.ReasonStreamReplaced, "", ""},
	{"offline", "ev_disconnected"}: {domain.StateOffline, domain.ReasonStreamReplaced, "", ""},
	{"offline", "opened_stale"}:    {domain.StateOffline, domain.ReasonStreamReplaced, "closeClient", ""},

	{"unlinking", "logout"}:          {domain.StateUnlinking, domain.ReasonLogout, "", ""},
	{"unlinking", "delete"}:          {domain.StateUnlinking, domain.ReasonLogout, "", ""},
	{"unlinking", "ev_connected"}:    {domain.StateUnlinking, domain.ReasonLogout, "logout", ""},
	{"unlinking", "ev_disconnected"}: {domain.StateUnlinking, domain.ReasonLogout, "", ""},
	{"unlinking", "ev_logged_out"}:   {domain.StateUnlinking, domain.ReasonLogout, "closeClient remove", ""},
	{"unlinking", "ev_offline"}:      {domain.StateOffline, domain.ReasonTemporaryBan, "reply disconnect", "unavailable"},
	{"unlinking", "ev_push_name"}:    {domain.StateUnlinking, domain.ReasonLogout, "", ""},
	{"unlinking", "opened"}:          {domain.StateUnlinking, domain.ReasonLogout, "", ""},
	{"unlinking", "opened_stale"}:    {domain.StateUnlinking, domain.ReasonLogout, "closeClient", ""},
	{"unlinking", "opened_unlinked"}: {domain.StateUnlinking, domain.ReasonLogout, "closeClient remove", ""},
	{"unlinking", "opened_err"}:      {domain.StateUnlinking, domain.ReasonLogout, "closeClient remove", ""},
	{"unlinking", "connect_failed"}:  {domain.StateOffline, domain.ReasonConnectFailed, "reply disconnect", "unavailable"},
	{"unlinking", "timer"}:           {domain.StateConnecting, "", "reply", "unavailable"},

	{"logged_out", "login_qr"}:   {domain.StatePairing, "", "openPairing", ""},
	{"logged_out", "login_code"}: {domain.StatePairing, "", "openPairing", ""},
	{"logged_out", "logout"}:     {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "reply", "ok"},
	{"logged_out", "delete"}:     {domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "deleteSlot", ""},

	{"logged_out_files", "logout"}: {domain.StateUnlinking, domain.ReasonSessionUnreadable, "remove", ""},
	{"logged_out_files", "delete"}: {domain.StateLoggedOut, domain.ReasonSessionUnreadable, "deleteSlot", ""},
}

// emitted lists the live events each pair emits, in order, as
// "type(detail)": the method of device.pairing, the reason of
// device.disconnected and device.logged_out. Every pair not listed emits
// none.
var emitted = map[[2]string]string{
	{"*", "created"}: "device.created",
	// Messages of the current client, in the states that have one.
	{"pairing", "ev_message"}:    "message.received",
	{"connecting", "ev_message"}: "message.received",
	{"connected", "ev_message"}:  "message.received",
	{"offline", "ev_message"}:    "message.received",
	{"unlinking", "ev_message"}:  "message.received",

	{"pairing", "ev_qr"}: "device.pairing(qr)",

	{"connecting", "ev_connected"}:   "device.connected(" + jidM + ")",
	{"connecting", "ev_offline"}:     "device.disconnected(temporary_ban)",
	{"connecting", "connect_failed"}: "device.disconnected(connect_failed)",
	{"connecting", "opened_err"}:     "device.logged_out(session_unreadable)",

	{"connected", "reconnect"}:       "device.disconnected()", // no reason: asked through the API
	{"connected", "ev_disconnected"}: "device.disconnected(connection_lost)",
	{"connected", "ev_offline"}:      "device.disconnected(temporary_ban)",
	{"connected", "connect_failed"}:  "device.disconnected(connect_failed)",

	// This unlink began while connecting: going offline is news.
	{"unlinking", "ev_offline"}:     "device.disconnected(temporary_ban)",
	{"unlinking", "connect_failed"}: "device.disconnected(connect_failed)",
}

// Inputs that only matter mid-way through a pairing or an unlink, checked
// from those mid-way machines.
var midway = []struct {
	name  string
	from  func(machine) machine
	state string // the machine it starts from
	in    input
	want  outcome
}{
	{"code request answered", func(m machine) machine {
		m.Pair.Phone, m.Pair.Asking = "628111111111", true
		m.Waiters = []waiter{{Op: opOld, Kind: waitCode, Phone: "628111111111"}}
		return m
	}, "pairing", inputs["code_given"], outcome{domain.StatePairing, "", "reply", "ok"}},
	{"code request fails a code pairing", func(m machine) machine {
		m.Pair.Phone, m.Pair.Asking, m.Pair.ForCode = "628111111111", true, true
		m.Waiters = []waiter{{Op: opOld, Kind: waitCode, Phone: "628111111111"}}
		return m
	}, "pairing", inputs["code_err"], outcome{domain.StatePairing, "", "closeClient discard observeLogin", ""}},
	{"pairing gone", func(m machine) machine {
		m.Pair.Ending, m.Pair.EndReason = true, domain.ReasonPairingExpired
		m.Waiters = []waiter{{Op: opOld, Kind: waitEnded, Err: errUnreachable}}
		return m
	}, "pairing", inputs["discarded"], outcome{domain.StateDisconnected, domain.ReasonPairingExpired, "reply", "unavailable"}},
	{"pairing gone, a login waits", func(m machine) machine {
		m.Pair.Ending, m.Pair.EndReason = true, domain.ReasonPairingExpired
		m.Waiters = []waiter{{Op: opOld, Kind: waitQR}}
		return m
	}, "pairing", inputs["discarded"], outcome{domain.StatePairing, "", "openPairing", ""}},
	{"session saved", func(m machine) machine {
		m.Pair.Promoting, m.Pair.Identity = true, domain.Identity{JID: jidM}
		return m
	}, "pairing", inputs["promoted"], outcome{domain.StateConnecting, "", "observeLogin connect", ""}},
	{"session not saved", func(m machine) machine {
		m.Pair.Promoting, m.Pair.Identity = true, domain.Identity{JID: jidM}
		return m
	}, "pairing", inputs["promote_err"], outcome{domain.StatePairing, "", "closeClient discard observeLogin", ""}},
	{"logged out on WhatsApp", func(m machine) machine {
		m.Unlink.Phase = unlinkLoggingOut
		return m
	}, "unlinking", inputs["logout_done"], outcome{domain.StateUnlinking, domain.ReasonLogout, "closeClient remove", ""}},
	{"logout unconfirmed", func(m machine) machine {
		m.Unlink.Phase, m.Online = unlinkLoggingOut, true
		return m
	}, "unlinking", inputs["logout_err"], outcome{domain.StateConnected, "", "reply", "unavailable"}},
	{"delete unconfirmed goes on", func(m machine) machine {
		m.Unlink.Phase, m.Unlink.Delete, m.Online = unlinkLoggingOut, true, true
		return m
	}, "unlinking", inputs["logout_err"], outcome{domain.StateUnlinking, domain.ReasonLogout, "warn closeClient deleteSlot", ""}},
	{"files removed", func(m machine) machine {
		m.Unlink.Phase = unlinkRemoving
		return m
	}, "unlinking", inputs["removed"], outcome{domain.StateLoggedOut, domain.ReasonLogout, "reply", "ok"}},
	{"files not removed", func(m machine) machine {
		m.Unlink.Phase = unlinkRemoving
		return m
	}, "unlinking", inputs["removed_err"], outcome{domain.StateLoggedOut, domain.ReasonLogout, "reply", "unavailable"}},
	{"slot deleted", func(m machine) machine {
		m.Deleting = true
		m.Waiters = []waiter{{Op: opOld, Kind: waitDelete}}
		return m
	}, "logged_out", inputs["slot_deleted"], outcome{domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "stop reply", "ok"}},
	{"linked slot deleted", func(m machine) machine {
		m.Deleting, m.Unlink.Phase, m.Unlink.Delete = true, unlinkRemoving, true
		m.Waiters = []waiter{{Op: opOld, Kind: waitDelete}}
		return m
	}, "unlinking", inputs["slot_deleted"], outcome{domain.StateUnlinking, domain.ReasonLogout, "stop reply", "ok"}},
	{"session missing at start", func(m machine) machine {
		m.Told = told{} // found ended now: not told yet
		return m
	}, "logged_out", inputs["start"], outcome{domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "", ""}},
	{"session ended, told before", func(m machine) machine { return m }, "logged_out", inputs["start"],
		outcome{domain.StateLoggedOut, domain.ReasonRemovedOnPhone, "", ""}},
	{"slot not deleted", func(m machine) machine {
		m.Deleting = true
		m.Waiters = []waiter{{Op: opOld, Kind: waitDelete}}
		return m
	}, "logged_out_files", slotDeleted{Err: errBoom}, outcome{domain.StateLoggedOut, domain.ReasonSessionUnreadable, "reply", "unavailable"}},
}

// midwayEmitted is emitted for the midway cases, by name.
var midwayEmitted = map[string]string{
	"code request answered":       "device.pairing(code)",
	"pairing gone":                "device.disconnected(pairing_expired)",
	"pairing gone, a login waits": "device.disconnected(pairing_expired)",
	"logout unconfirmed":          "device.connected(" + jidM + ")", // began while connecting, never told connected
	"files removed":               "device.logged_out(logout)",
	"files not removed":           "device.logged_out(logout)",
	"slot deleted":                "device.deleted",
	"linked slot deleted":         "device.logged_out(logout) device.deleted",
	"slot not deleted":            "",
	"session missing at start":    "device.logged_out(removed_on_phone)",
	"session ended, told before":  "",
}

func TestTransitionTable(t *testing.T) {
	ms := machines()
	covered := map[[2]string]bool{}
	for _, sname := range slices.Sorted(maps.Keys(ms)) {
		for _, iname := range slices.Sorted(maps.Keys(inputs)) {
			m, in := ms[sname], inputs[iname]
			key := [2]string{sname, iname}
			covered[key] = true
			t.Run(sname+"/"+iname, func(t *testing.T) {
				next, effs := transition(m, in, t0.Add(time.Second))
				wantEvents := emitted[key]
				if _, any := emitted[[2]string{"*", iname}]; any {
					wantEvents = emitted[[2]string{"*", iname}]
				}
				if got := eventsOf(effs); got != wantEvents {
					t.Errorf("events %q, want %q", got, wantEvents)
				}
				if in, ok := in.(cmdShutdown); ok {
					checkShutdown(t, m, next, effs, in.Drop)
					return
				}
				want, ok := accepted[key]
				if !ok {
					want, ok = accepted[[2]string{"*", iname}]
					want.state, want.reason = m.State, m.Reason
				}
				if !ok {
					checkUnaccepted(t, m, in, next, effs)
					return
				}
				checkOutcome(t, next, effs, want)
			})
		}
	}
	for key := range accepted {
		if key[0] != "*" && !covered[key] {
			t.Errorf("accepted lists %v, which is no (state, input) pair", key)
		}
	}
	for key := range emitted {
		if key[0] != "*" && !covered[key] {
			t.Errorf("emitted lists %v, which is no (state, input) pair", key)
		}
	}
	for _, tc := range midway {
		t.Run("midway/"+tc.name, func(t *testing.T) {
			next, effs := transition(tc.from(ms[tc.state]), tc.in, t0.Add(time.Second))
			checkOutcome(t, next, effs, tc.want)
			if got, want := eventsOf(effs), midwayEmitted[tc.name]; got != want {
				t.Errorf("events %q, want %q", got, want)
			}
		})
	}
}

// checkUnaccepted: nothing changes; a command is refused naming the state.
func checkUnaccepted(t *testing.T, m machine, in input, next machine, effs []effect) {
	t.Helper()
	if !reflect.DeepEqual(next, m) {
		t.Errorf("an input the state does not accept changed the machine:\n got %+v\nwant %+v", next, m)
	}
	if _, isCmd := opOf(in); !isCmd {
		if len(effs) != 0 {
			t.Errorf("an event the state does not accept had effects %s", names(effs))
		}
		return
	}
	if len(effs) != 1 {
		t.Fatalf("a refused command had effects %s, want one reply", names(effs))
	}
	r, ok := effs[0].(reply)
	if !ok || r.Op != opCmd || domain.ErrorCode(r.Err) != domain.ECONFLICT {
		t.Fatalf("a refused command got %+v, want an ECONFLICT reply", effs[0])
	}
	if !strings.Contains(r.Err.Error(), "is "+string(m.State)) {
		t.Errorf("refusal %q does not name the state %s", r.Err, m.State)
	}
}

func checkOutcome(t *testing.T, next machine, effs []effect, want outcome) {
	t.Helper()
	if next.State != want.state || next.Reason != want.reason {
		t.Errorf("→ %s (%s), want %s (%s)", next.State, next.Reason, want.state, want.reason)
	}
	if got := names(effs); got != want.effects {
		t.Errorf("effects %q, want %q", got, want.effects)
	}
	if got := replies(effs); got != want.replies {
		t.Errorf("replies %q, want %q", got, want.replies)
	}
}

// checkShutdown: every state closes its client, answers every waiter and
// stops; the session stays (nothing is removed or deleted).
func checkShutdown(t *testing.T, m machine, next machine, effs []effect, drop bool) {
	t.Helper()
	if !next.Gone || next.Gen != 0 {
		t.Errorf("after shutdown: gone %v, client %d", next.Gone, next.Gen)
	}
	if _, ok := effs[len(effs)-1].(stop); !ok {
		t.Errorf("shutdown effects %s do not end with stop", names(effs))
	}
	closed := false
	for _, e := range effs {
		switch e := e.(type) {
		case remove, deleteSlot, logout, save:
			t.Errorf("shutdown touched the session: %T", e)
		case closeClient:
			closed = e.Gen == m.Gen
		}
	}
	if m.Gen != 0 && !closed {
		t.Errorf("shutdown left client %d open: %s", m.Gen, names(effs))
	}
	if got, want := strings.Count(replies(effs), "unavailable"), len(m.Waiters); got != want {
		t.Errorf("%d waiters told of the shutdown, want %d", got, want)
	}
	for _, e := range effs {
		if r, ok := e.(reply); ok && strings.Contains(r.Err.Error(), "another replica") != drop {
			t.Errorf("drop %v: a waiter was told %q", drop, r.Err)
		}
	}
}

func names(effs []effect) string {
	var out []string
	for _, e := range effs {
		if _, ok := e.(emit); ok {
			continue // checked by eventsOf
		}
		if _, ok := e.(reply); ok && len(out) > 0 && out[len(out)-1] == "reply" {
			continue // several replies read as one
		}
		out = append(out, strings.TrimPrefix(fmt.Sprintf("%T", e), "device."))
	}
	return strings.Join(out, " ")
}

// eventsOf lists the events effs emit, as emitted has them.
func eventsOf(effs []effect) string {
	var out []string
	for _, e := range effs {
		e, ok := e.(emit)
		if !ok {
			continue
		}
		detail := ""
		switch d := e.Data.(type) {
		case domain.PairingEventData:
			detail = "(" + string(d.Method) + ")"
		case domain.ReasonEventData:
			detail = "(" + string(d.Reason) + ")"
		case domain.ConnectedEventData:
			detail = "(" + d.JID + ")"
		}
		out = append(out, string(e.Type)+detail)
	}
	return strings.Join(out, " ")
}

func replies(effs []effect) string {
	var out []string
	for _, e := range effs {
		if r, ok := e.(reply); ok {
			code := domain.ErrorCode(r.Err)
			if code == "" {
				code = "ok"
			}
			out = append(out, code)
		}
	}
	return strings.Join(out, " ")
}

// A stale client's events never change anything, in any state.
func TestTransitionIgnoresStaleClients(t *testing.T) {
	for name, m := range machines() {
		for _, ev := range []domain.Event{domain.Connected{}, domain.Disconnected{}, domain.LoggedOut{}, domain.Offline{}, domain.Paired{}, domain.PairingExpired{}} {
			next, effs := transition(m, clientEvent{Gen: 99, Event: ev}, t0)
			if !reflect.DeepEqual(next, m) || len(effs) != 0 {
				t.Errorf("%s: a stale %T changed the machine or had effects %s", name, ev, names(effs))
			}
		}
	}
}

// A device being deleted, or gone, takes no more commands.
func TestTransitionAfterDelete(t *testing.T) {
	m := machines()["connected"]
	m.Deleting = true
	_, effs := transition(m, cmdLogin{Op: opCmd, Method: domain.PairingQR}, t0)
	if replies(effs) != "not_found" {
		t.Errorf("login while deleting: %s", replies(effs))
	}
	m.Deleting, m.Gone = false, true
	_, effs = transition(m, cmdLogout{Op: opCmd}, t0)
	if replies(effs) != "not_found" {
		t.Errorf("logout once gone: %s", replies(effs))
	}
}
