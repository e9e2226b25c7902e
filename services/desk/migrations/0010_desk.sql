-- The agent's desk (#16). Expand only: the previous release reads and writes agents as before
-- (the new column has a default) and never touches the new tables.

-- Groups or queues an agent works in; a supervisor of a group sees its agents on the desk.
ALTER TABLE agents ADD COLUMN groups text[] NOT NULL DEFAULT '{}';

-- Agent sessions. The token is HMAC-SHA256(desk.token_key, id), never stored: only its SHA-256
-- is, so a copy of this table opens no stream.
CREATE TABLE desk_sessions (
    id           text PRIMARY KEY,
    token_hash   bytea NOT NULL UNIQUE,
    agent_id     text NOT NULL REFERENCES agents (id) ON DELETE CASCADE,
    role         text NOT NULL CHECK (role IN ('agent', 'supervisor')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
-- `keep` finds the agent's live session of a role.
CREATE INDEX desk_sessions_agent ON desk_sessions (agent_id, role) WHERE revoked_at IS NULL;

-- Every replica ends a revoked session's streams within a second (LISTEN switchboard_desk,
-- payload `session:<id>`).
CREATE FUNCTION notify_desk_session_revoked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.revoked_at IS NOT NULL AND OLD.revoked_at IS NULL THEN
        PERFORM pg_notify('switchboard_desk', 'session:' || NEW.id);
    END IF;
    RETURN NULL;
END;
$$;
CREATE TRIGGER desk_session_revoked AFTER UPDATE ON desk_sessions
    FOR EACH ROW EXECUTE FUNCTION notify_desk_session_revoked();

-- The screen-pop of each source (`*`: every source without its own).
CREATE TABLE desk_screen_pops (
    source_id     text PRIMARY KEY,
    url_template  text NOT NULL,
    mode          text NOT NULL CHECK (mode IN ('open', 'notify', 'none')),
    pop_on        text NOT NULL CHECK (pop_on IN ('ringing', 'answered')),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION notify_desk_screen_pops() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('switchboard_desk', 'screen_pops');
    RETURN NULL;
END;
$$;
CREATE TRIGGER desk_screen_pops_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON desk_screen_pops
    FOR EACH STATEMENT EXECUTE FUNCTION notify_desk_screen_pops();

-- Each agent's current status, as last set (the change itself goes out on the agent-status
-- topic).
CREATE TABLE desk_agent_status (
    agent_id    text PRIMARY KEY REFERENCES agents (id) ON DELETE CASCADE,
    status      text NOT NULL CHECK (status IN ('available', 'break', 'offline')),
    changed_at  timestamptz NOT NULL DEFAULT now()
);
