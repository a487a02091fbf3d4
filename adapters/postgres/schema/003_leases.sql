-- The live replicas and the device leases (ports.Leases).
CREATE TABLE gowa_replicas (
	id         TEXT PRIMARY KEY,
	addr       TEXT NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL
);

-- One row per device ever leased. holder is NULL once released. token is
-- the fencing token: it grows at every acquisition, from one sequence.
CREATE TABLE gowa_leases (
	device_id  TEXT PRIMARY KEY,
	holder     TEXT,
	token      BIGINT NOT NULL,
	expires_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX gowa_leases_holder ON gowa_leases (holder);
CREATE SEQUENCE gowa_lease_token;
