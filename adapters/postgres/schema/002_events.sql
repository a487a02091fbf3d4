-- The live event log (ports.EventLog), the webhook outbox filled in the
-- same transaction (ports.Outbox) and the devices' webhooks
-- (ports.Webhooks), shared by every replica.

-- The last event id ever given, one row. Appends take an advisory lock and
-- bump it inside their transaction, so that ids commit in increasing order
-- (a reader that has seen id n never sees a smaller one commit later), are
-- never reused after pruning, and a rolled-back append gives none away.
CREATE TABLE gowa_event_last (
	one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one),
	id  BIGINT NOT NULL
);
INSERT INTO gowa_event_last (id) VALUES (0);

CREATE TABLE gowa_events (
	id        BIGINT PRIMARY KEY,
	type      TEXT NOT NULL,
	device_id TEXT NOT NULL,
	time      TIMESTAMPTZ NOT NULL,
	data      JSON NOT NULL      -- the payload, byte for byte as emitted
);
CREATE INDEX gowa_events_time ON gowa_events (time);

CREATE TABLE gowa_outbox (
	id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	endpoint   TEXT NOT NULL,     -- "global:<url>" or "device:<id>"
	device_id  TEXT NOT NULL,
	event_id   BIGINT NOT NULL,
	type       TEXT NOT NULL,
	body       BYTEA NOT NULL,    -- the event's JSON, as signed and sent
	attempts   INTEGER NOT NULL DEFAULT 0,
	next_at    TIMESTAMPTZ,       -- NULL: due now
	created_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX gowa_outbox_endpoint ON gowa_outbox (endpoint, id);

-- Secrets are stored as given, as in SQLite's events.db: whoever can read
-- this database can read every session key too.
CREATE TABLE gowa_webhooks (
	device_id TEXT PRIMARY KEY,
	url       TEXT NOT NULL,
	secret    TEXT NOT NULL,
	events    TEXT[] NOT NULL DEFAULT '{}'
);
