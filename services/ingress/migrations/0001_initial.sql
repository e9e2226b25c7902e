-- Switchboard's first schema: PBX sources, and the call log (calls, legs, the events behind them).

-- Who may post webhooks, and which adapter reads them.
CREATE TABLE sources (
    id              text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    vendor          text NOT NULL,
    -- SHA-256 of the generated secret. The secret is shown once, when the source is created, and
    -- is never stored: it is 256 random bits, so a fast hash is as safe as a slow one and keeps
    -- authentication cheap on every webhook.
    secret_sha256   bytea NOT NULL CHECK (length(secret_sha256) = 32),
    -- ISO 3166 region for numbers the PBX sends in national format.
    default_region  text NOT NULL DEFAULT 'US',
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled_at     timestamptz
);

-- Every distinct event the call log has folded in. The primary key is the dedupe key: a PBX
-- retry or a Kafka re-delivery of the same event is a conflict and changes nothing.
CREATE TABLE call_events (
    source_id        text NOT NULL,
    event_id         text NOT NULL,
    call_id          text NOT NULL,
    leg_id           text,
    kind             text NOT NULL,
    occurred_at      timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    raw_id           text NOT NULL,
    sequence         bigint,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    -- Wall-clock time the row was written: with received_at, the webhook-to-row latency.
    stored_at        timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (source_id, event_id)
);
CREATE INDEX call_events_by_call ON call_events (source_id, call_id, occurred_at);
CREATE INDEX call_events_by_raw_id ON call_events (raw_id);

-- One row per call. Times merge with LEAST/GREATEST (which skip NULLs) so that events folded in
-- any order give the same times; status and outcome are derived, never stored separately.
CREATE TABLE calls (
    source_id          text NOT NULL,
    call_id            text NOT NULL,
    vendor             text NOT NULL,
    direction          text NOT NULL,
    -- E.164 when the number parsed, otherwise as the PBX wrote it (extensions, "anonymous").
    from_number        text,
    to_number          text,
    agent_number       text,
    agent_email        text,
    started_at         timestamptz NOT NULL,
    answered_at        timestamptz,
    ended_at           timestamptz,
    recording_url      text,
    hangup_cause       text,
    event_count        integer NOT NULL,
    first_received_at  timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    status             text GENERATED ALWAYS AS (
        CASE WHEN ended_at IS NOT NULL THEN 'ended'
             WHEN answered_at IS NOT NULL THEN 'answered'
             ELSE 'ringing' END) STORED,
    outcome            text GENERATED ALWAYS AS (
        CASE WHEN ended_at IS NULL THEN NULL
             WHEN answered_at IS NOT NULL THEN 'answered'
             ELSE 'missed' END) STORED,
    PRIMARY KEY (source_id, call_id)
);
CREATE INDEX calls_by_started_at ON calls (started_at DESC);

-- One row per leg; a call without leg ids has one leg whose id is the call id.
CREATE TABLE call_legs (
    source_id     text NOT NULL,
    call_id       text NOT NULL,
    leg_id        text NOT NULL,
    agent_number  text,
    agent_email   text,
    started_at    timestamptz NOT NULL,
    answered_at   timestamptz,
    ended_at      timestamptz,
    hangup_cause  text,
    event_count   integer NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    status        text GENERATED ALWAYS AS (
        CASE WHEN ended_at IS NOT NULL THEN 'ended'
             WHEN answered_at IS NOT NULL THEN 'answered'
             ELSE 'ringing' END) STORED,
    PRIMARY KEY (source_id, call_id, leg_id),
    FOREIGN KEY (source_id, call_id) REFERENCES calls (source_id, call_id)
);
