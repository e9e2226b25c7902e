-- Click-to-call (#17). Expand only: new table, nothing the previous release reads changes.

-- Every call placed through a PBX's API, stored before the vendor is called, so that a retry of
-- the same idempotency key gets the first answer instead of a second call, and so that the
-- call's webhooks can be linked to the request (by the vendor's call or command id).
CREATE TABLE originate_requests (
    source_id        text NOT NULL REFERENCES sources (id) ON DELETE CASCADE,
    idempotency_key  text NOT NULL,
    -- SHA-256 of the request's content: the same key with another request is refused.
    request_hash     bytea NOT NULL,
    -- Switchboard's id of the command, given to the vendor where it takes one.
    request_id       text NOT NULL UNIQUE,
    agent_id         text,
    destination      text NOT NULL,
    -- `api`: a CRM back end with an API token; `desk`: an agent's session.
    via              text NOT NULL CHECK (via IN ('api', 'desk')),
    session_id       text,
    state            text NOT NULL CHECK (state IN ('pending', 'placed', 'refused', 'failed')),
    http_status      integer,
    answer           jsonb,
    vendor_call_id   text,
    command_id       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    PRIMARY KEY (source_id, idempotency_key)
);
CREATE INDEX originate_by_vendor_call ON originate_requests (source_id, vendor_call_id)
    WHERE vendor_call_id IS NOT NULL;
CREATE INDEX originate_by_command ON originate_requests (source_id, command_id)
    WHERE command_id IS NOT NULL;
