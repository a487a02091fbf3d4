-- The device slots (ports.Registry), one row per device id.
CREATE TABLE gowa_devices (
	id         TEXT PRIMARY KEY,
	jid        TEXT UNIQUE,          -- the linked companion JID, NULL while not linked
	created_at TIMESTAMPTZ NOT NULL,
	ended      TEXT NOT NULL DEFAULT '',
	ended_at   TIMESTAMPTZ
);
