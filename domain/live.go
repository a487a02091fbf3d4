package domain

import (
	"encoding/json"
	"net/url"
	"strings"
	"time"
)

// EventType names what a live event reports.
type EventType string

// The live event types. Device events come from device transitions, message
// events from WhatsApp; stream.gap is made up by the event stream for a
// reader that asks to resume from an event no longer kept.
const (
	EventDeviceCreated      EventType = "device.created"
	EventDeviceDeleted      EventType = "device.deleted"
	EventDevicePairing      EventType = "device.pairing"
	EventDeviceConnected    EventType = "device.connected"
	EventDeviceDisconnected EventType = "device.disconnected"
	EventDeviceLoggedOut    EventType = "device.logged_out"
	EventMessageReceived    EventType = "message.received"
	EventMessageSent        EventType = "message.sent"
	EventStreamGap          EventType = "stream.gap"
)

// EventTypes lists the types a filter may name, in a stable order.
var EventTypes = []EventType{
	EventDeviceCreated, EventDeviceDeleted, EventDevicePairing, EventDeviceConnected,
	EventDeviceDisconnected, EventDeviceLoggedOut, EventMessageReceived, EventMessageSent,
	EventStreamGap,
}

// LiveEvent is one entry of the gateway's event log, as the event stream and
// webhooks tell it. ID is unique and increasing per gateway, across
// restarts; Data is the type's JSON payload.
type LiveEvent struct {
	ID       int64           `json:"id"`
	Type     EventType       `json:"type"`
	DeviceID string          `json:"device_id"`
	Time     time.Time       `json:"time"`
	Data     json.RawMessage `json:"data"`
}

// TypeFilter matches event types: each entry is a full type
// ("device.connected") or a prefix ending in a dot ("device."). An empty
// filter matches everything.
type TypeFilter []string

// ParseTypeFilter checks each entry against the known types and returns an
// EINVALID error naming the first one that matches none.
func ParseTypeFilter(entries []string) (TypeFilter, error) {
	for _, e := range entries {
		if !TypeFilter([]string{e}).matchesAny() {
			return nil, Errorf(EINVALID, "unknown event type %q (known: %s, or a prefix such as device.)", e, joinTypes())
		}
	}
	return TypeFilter(entries), nil
}

func (f TypeFilter) matchesAny() bool {
	for _, t := range EventTypes {
		if f.Match(t) {
			return true
		}
	}
	return false
}

// Match reports whether t passes the filter.
func (f TypeFilter) Match(t EventType) bool {
	if len(f) == 0 {
		return true
	}
	for _, e := range f {
		if strings.HasSuffix(e, ".") && strings.HasPrefix(string(t), e) || string(t) == e {
			return true
		}
	}
	return false
}

func joinTypes() string {
	s := make([]string, len(EventTypes))
	for i, t := range EventTypes {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// PairingEventData is the payload of device.pairing, emitted for each new QR
// code or pairing code. It never carries the code itself.
type PairingEventData struct {
	Method    PairingMethod `json:"method"`
	ExpiresAt time.Time     `json:"expires_at"`
}

// ConnectedEventData is the payload of device.connected.
type ConnectedEventData struct {
	JID      string `json:"jid"`
	Phone    string `json:"phone"`
	PushName string `json:"push_name"`
	Platform string `json:"platform"`
}

// ReasonEventData is the payload of device.disconnected and
// device.logged_out: Reason is the device's own reason (the Status's, as
// the API shows it: null when none, as after a reconnect asked through the
// API); Detail is the human-readable cause when there is one.
type ReasonEventData struct {
	Reason Reason `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// MarshalJSON writes ReasonNone as null, as the device's status does.
func (d ReasonEventData) MarshalJSON() ([]byte, error) {
	type plain struct {
		Reason *Reason `json:"reason"`
		Detail string  `json:"detail,omitempty"`
	}
	p := plain{Detail: d.Detail}
	if d.Reason != ReasonNone {
		p.Reason = &d.Reason
	}
	return json.Marshal(p)
}

// MessageEventData is the payload of message.received and message.sent.
// Type is "text", or the kind of a message the gateway does not read yet
// ("image", "sticker", …), which then has no Text.
type MessageEventData struct {
	ID        string    `json:"id"`
	Chat      string    `json:"chat"`
	From      string    `json:"from"`
	FromMe    bool      `json:"from_me"`
	PushName  string    `json:"push_name,omitempty"`
	Timestamp time.Time `json:"timestamp"`
	Type      string    `json:"type"`
	Text      string    `json:"text,omitempty"`
}

// GapEventData is the payload of stream.gap: the reader asked to resume
// after LastEventID, but the events from there up to Next were dropped by
// retention (or never existed here), so the stream goes on from Next.
type GapEventData struct {
	LastEventID int64 `json:"last_event_id"`
	Next        int64 `json:"next_id"`
}

// IncomingMessage is a message a linked device received (or sent from
// another of the account's devices, FromMe), as the WhatsApp adapter reports
// it. Done, when set, is called once the message.received event is durable
// (or was dropped), so that the adapter acknowledges the message to
// WhatsApp only then: an acknowledged message is never sent again.
type IncomingMessage struct {
	Message MessageEventData
	Done    func()
}

func (IncomingMessage) event() {}

// Webhook is an HTTP endpoint that is sent events: a device's own (DeviceID
// set, only that device's events) or a global one from the configuration.
type Webhook struct {
	DeviceID string
	URL      string
	Secret   string
	Events   TypeFilter // empty: every type
}

// MinWebhookSecret is the shortest secret a webhook may have, in bytes.
const MinWebhookSecret = 16

// ValidateWebhook returns an EINVALID error unless w has an http(s) URL with
// a host, a secret of at least MinWebhookSecret bytes and known event types.
func ValidateWebhook(w Webhook) error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Errorf(EINVALID, "url must be an http or https URL")
	}
	if len(w.Secret) < MinWebhookSecret {
		return Errorf(EINVALID, "secret must be at least %d bytes", MinWebhookSecret)
	}
	if _, err := ParseTypeFilter(w.Events); err != nil {
		return err
	}
	return nil
}

// Delivery is one event waiting in the outbox for one endpoint.
type Delivery struct {
	ID        int64 // the outbox entry
	Endpoint  string
	DeviceID  string
	EventID   int64
	Type      EventType
	Body      []byte // the event's JSON, as signed and sent
	Attempts  int
	NextAt    time.Time // the next attempt is not due before
	CreatedAt time.Time
}
