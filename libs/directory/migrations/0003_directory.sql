-- The directory (#4): agents, contacts (customers) and the company's own numbers, which the
-- matcher and the router keep in memory. Every change notifies `switchboard_directory`, so every
-- instance reloads within a second (LISTEN/NOTIFY; see services/directory).

CREATE TABLE agents (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'),
    name            text NOT NULL,
    email           text CHECK (email IS NULL OR email LIKE '%_@_%'),
    -- Internal extensions as the PBXs name them ("101").
    extensions      text[] NOT NULL DEFAULT '{}',
    -- Direct numbers and mobiles, E.164.
    phone_numbers   text[] NOT NULL DEFAULT '{}',
    -- The agent's id in each source's PBX: {"telphin-main": "5123", ...}.
    external_ids    jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX agents_email ON agents (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE contacts (
    id                    text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$'),
    name                  text NOT NULL,
    company               text,
    -- Every number of the contact, E.164; a number may belong to several contacts (a company's
    -- switchboard), which the matcher reports as ambiguous.
    phone_numbers         text[] NOT NULL DEFAULT '{}',
    responsible_agent_id  text REFERENCES agents (id) ON DELETE SET NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX contacts_phone_numbers ON contacts USING gin (phone_numbers);

-- DIDs and trunks: never matched as a customer.
CREATE TABLE own_numbers (
    number      text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    label       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION notify_directory_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_directory', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

-- One notification per statement, so a bulk import of 10,000 rows is one reload, not 10,000.
CREATE TRIGGER agents_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON agents
    FOR EACH STATEMENT EXECUTE FUNCTION notify_directory_change();
CREATE TRIGGER contacts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON contacts
    FOR EACH STATEMENT EXECUTE FUNCTION notify_directory_change();
CREATE TRIGGER own_numbers_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON own_numbers
    FOR EACH STATEMENT EXECUTE FUNCTION notify_directory_change();
-- Sources carry the matcher's per-source options (match by email).
CREATE TRIGGER sources_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION notify_directory_change();
