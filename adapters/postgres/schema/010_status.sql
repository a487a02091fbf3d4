-- Each device's status as its holder last wrote it, so that GET /devices on
-- any replica lists every device. Written on every transition of the
-- device, by the replica that holds its lease (see status.go); a device
-- whose holder died shows its last written status until another adopts it.
CREATE TABLE gowa_device_status (
	device_id          TEXT PRIMARY KEY,
	state              TEXT NOT NULL,
	reason             TEXT NOT NULL DEFAULT '',
	detail             TEXT NOT NULL DEFAULT '',
	jid                TEXT NOT NULL DEFAULT '',
	phone              TEXT NOT NULL DEFAULT '',
	push_name          TEXT NOT NULL DEFAULT '',
	platform           TEXT NOT NULL DEFAULT '',
	logged_in          BOOLEAN NOT NULL,
	connected          BOOLEAN NOT NULL,
	since              TIMESTAMPTZ NOT NULL,
	pairing_method     TEXT NOT NULL DEFAULT '',
	pairing_expires_at TIMESTAMPTZ,
	holder             TEXT NOT NULL,
	updated_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Keys every replica shares, made by the first replica that needs one:
-- 'forward' signs the requests one replica forwards to another.
CREATE TABLE gowa_cluster_keys (
	name TEXT PRIMARY KEY,
	key  BYTEA NOT NULL
);
