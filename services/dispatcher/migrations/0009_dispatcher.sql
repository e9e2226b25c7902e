-- Outbound delivery (dispatcher, #15): delivery profiles, the deliveries they schedule, and the
-- log of every attempt.

-- One row per profile. `spec` is the profile as written (the dispatcher library's ProfileSpec)
-- with every secret replaced by "***", for reading and for operators; `sealed` is the whole spec,
-- secrets included, sealed with dispatcher.secrets_key (AES-256-GCM, nonce first), which is what
-- the dispatcher runs. The state here, not the spec's, is authoritative.
CREATE TABLE delivery_profiles (
    id               text PRIMARY KEY,
    name             text NOT NULL,
    spec             jsonb NOT NULL,
    sealed           bytea NOT NULL,
    state            text NOT NULL DEFAULT 'enabled' CHECK (state IN ('enabled', 'paused', 'disabled')),
    disabled_reason  text,
    -- Since when every attempt of the profile has failed (NULL once one succeeds): the profile is
    -- disabled once this is older than dispatcher.disable_after_hours.
    failing_since    timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- One row per (profile, event or record version), keyed by the library's delivery_id, so that a
-- record read twice schedules nothing twice (INSERT ... ON CONFLICT DO NOTHING). The rows are the
-- retry schedule too: a replica claims due pending rows with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE deliveries (
    id               text PRIMARY KEY,
    -- Insertion order, for per-(profile, call) ordering: a delivery is not due while an earlier
    -- pending one of the same profile and call exists.
    seq              bigserial NOT NULL,
    profile_id       text NOT NULL REFERENCES delivery_profiles (id) ON DELETE CASCADE,
    source_id        text NOT NULL,
    call_id          text NOT NULL,
    -- The event id, or `record:<version>`.
    subject_id       text NOT NULL,
    trigger          text NOT NULL,
    -- `event` (a CallEvent) or `record` (a CallRecord), as JSON: what the requests are rendered
    -- from, on every attempt and on a replay.
    subject_kind     text NOT NULL CHECK (subject_kind IN ('event', 'record')),
    subject          jsonb NOT NULL,
    status           text NOT NULL CHECK (status IN ('pending', 'delivered', 'failed', 'discarded')),
    -- Attempts made in all; `schedule_base` is the count when the delivery was last (re)queued, so
    -- that a replay starts the retry schedule afresh.
    attempts         integer NOT NULL DEFAULT 0,
    schedule_base    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    lease_until      timestamptz,
    -- The steps done so far and what they extracted (the library's FlowState).
    flow             jsonb NOT NULL DEFAULT '{}',
    -- Its next step waits for the call's recording: a newer record of the call replaces `subject`
    -- and makes it due at once (the consumer does, in the batch's transaction).
    waiting          boolean NOT NULL DEFAULT false,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_call ON deliveries (profile_id, source_id, call_id, seq) WHERE status = 'pending';
CREATE INDEX deliveries_by_profile ON deliveries (profile_id, created_at);

-- Every attempt: what was sent (without secrets) and what came back.
CREATE TABLE delivery_attempts (
    delivery_id      text NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    n                integer NOT NULL,
    step             text NOT NULL,
    started_at       timestamptz NOT NULL,
    request          jsonb NOT NULL,
    response_status  integer,
    response_body    text,
    latency_ms       bigint NOT NULL,
    error            text,
    -- One attempt runs the profile's remaining steps in order: a row per step it reached.
    PRIMARY KEY (delivery_id, n, step)
);

-- The highest call-record version the dispatcher has seen per call: only it tells a call's first
-- record (completed) from a later one (changed). Written in the same transaction as the
-- deliveries the record scheduled.
CREATE TABLE dispatcher_seen_records (
    source_id  text NOT NULL,
    call_id    text NOT NULL,
    version    bigint NOT NULL,
    PRIMARY KEY (source_id, call_id)
);
