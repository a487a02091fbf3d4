-- whatsmeow's sessions live in its own tables (whatsmeow_device and the
-- tables keyed by our_jid), created by whatsmeow's schema upgrade, which
-- runs after these migrations (see sessions.go). gowa_sessions adds what
-- gowa knows of them (ports.SessionStore):
--
--   - a linked session: key = jid = the companion JID, device_id = the slot
--     it was paired for;
--   - a pairing in progress: key = 'pairing:<device>-<16 hex>', noise_hash
--     = sha256 of the noise key of the unpaired whatsmeow device the
--     WhatsApp adapter opened for it, jid = the JID that device got once
--     whatsmeow saved it (set by gowa_claim_pairing, in the statement that
--     saves it, so that a crash before Promote loses nothing), maker = the
--     replica that made it: while that replica is live, the pairing is its
--     own, in progress, and no other replica lists it.
CREATE TABLE gowa_sessions (
	key        TEXT PRIMARY KEY,
	device_id  TEXT NOT NULL DEFAULT '',
	noise_hash BYTEA UNIQUE,
	jid        TEXT,
	maker      TEXT DEFAULT current_setting('gowa.holder', true),
	created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- gowa_fence refuses a write to a session whose device is leased to
-- another replica (see gowa_install_fences). TG_ARGV[0] names the column
-- holding the session's JID: our_jid, or jid. The lease row is read FOR
-- SHARE, so a takeover (which updates it) waits for a write in flight to
-- commit, and every write of the old holder after it is refused. A JID
-- without a lease row (a pairing just saved, a migration) is not fenced.
CREATE FUNCTION gowa_fence() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	j      TEXT;
	old_j  TEXT;
	holder TEXT;
	me     TEXT := current_setting('gowa.holder', true);
BEGIN
	IF TG_ARGV[0] = 'jid' THEN
		IF TG_OP <> 'INSERT' THEN old_j := OLD.jid; END IF;
		IF TG_OP <> 'DELETE' THEN j := NEW.jid; END IF;
	ELSE
		IF TG_OP <> 'INSERT' THEN old_j := OLD.our_jid; END IF;
		IF TG_OP <> 'DELETE' THEN j := NEW.our_jid; END IF;
	END IF;
	IF j IS NULL OR j = old_j THEN
		j := old_j;
		old_j := NULL;
	END IF;
	LOOP
		EXIT WHEN j IS NULL;
		SELECT l.holder INTO holder
		FROM gowa_devices d JOIN gowa_leases l ON l.device_id = d.id
		WHERE d.jid = j
		FOR SHARE OF l;
		IF FOUND AND holder IS DISTINCT FROM me THEN
			RAISE EXCEPTION 'gowa: the session % is leased to replica %, not to %', j, coalesce(holder, '(none)'), coalesce(me, '(none)')
				USING ERRCODE = 'GW001';
		END IF;
		j := old_j;
		old_j := NULL;
	END LOOP;
	IF TG_OP = 'DELETE' THEN
		RETURN OLD;
	END IF;
	RETURN NEW;
END
$$;

-- gowa_claim_pairing runs before whatsmeow inserts (or upserts) a device.
-- When the device is a pairing's (its noise key is the one the pairing
-- recorded), the pairing learns its JID, and any older device of the same
-- JID is deleted first: whatsmeow's upsert would keep the old keys under
-- the new device, and the phone reuses a JID only once the old companion
-- is unlinked.
CREATE FUNCTION gowa_claim_pairing() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
	UPDATE gowa_sessions SET jid = NEW.jid
	WHERE noise_hash = sha256(NEW.noise_key) AND key LIKE 'pairing:%';
	IF FOUND THEN
		DELETE FROM whatsmeow_device WHERE jid = NEW.jid AND noise_key <> NEW.noise_key;
	END IF;
	RETURN NEW;
END
$$;

-- gowa_install_fences puts gowa_fence on every whatsmeow table of the
-- current schema that holds a session's rows: those with an our_jid
-- column, whatsmeow_device (by jid), and those whose jid column is (part
-- of) a foreign key (whatsmeow_pre_keys, the app state tables). It also
-- puts gowa_claim_pairing on whatsmeow_device. It is idempotent and runs
-- after every whatsmeow schema upgrade, so a table a later whatsmeow adds
-- is fenced too. It returns the number of triggers it created.
CREATE FUNCTION gowa_install_fences() RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
	t       RECORD;
	created integer := 0;
BEGIN
	FOR t IN
		SELECT c.oid AS rel, c.relname AS name,
			CASE WHEN EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'our_jid' AND NOT a.attisdropped)
				THEN 'our_jid' ELSE 'jid' END AS col
		FROM pg_class c
		WHERE c.relnamespace = current_schema()::regnamespace
			AND c.relkind IN ('r', 'p')
			AND c.relname LIKE 'whatsmeow\_%'
			AND (
				EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'our_jid' AND NOT a.attisdropped)
				OR c.relname = 'whatsmeow_device'
				OR EXISTS (
					SELECT 1 FROM pg_constraint k JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
					WHERE k.conrelid = c.oid AND k.contype = 'f' AND a.attname = 'jid')
			)
	LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.rel AND tgname = 'gowa_fence') THEN
			EXECUTE format('CREATE TRIGGER gowa_fence BEFORE INSERT OR UPDATE OR DELETE ON %I FOR EACH ROW EXECUTE FUNCTION gowa_fence(%L)', t.name, t.col);
			created := created + 1;
		END IF;
		IF t.name = 'whatsmeow_device' AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = t.rel AND tgname = 'gowa_pairing') THEN
			EXECUTE 'CREATE TRIGGER gowa_pairing BEFORE INSERT ON whatsmeow_device FOR EACH ROW EXECUTE FUNCTION gowa_claim_pairing()';
			created := created + 1;
		END IF;
	END LOOP;
	RETURN created;
END
$$;
