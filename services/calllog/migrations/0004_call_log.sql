-- The call log's state machine (#3). Every event keeps what the fold reads, so a call is always
-- recomputed from the set of its stored events (services/calllog `fold`) instead of being merged
-- column by column; calls and legs hold the result, and complete calls are published to the calls
-- topic through an outbox (`call_outbox`).

-- What the fold reads of each event. Events written before this migration have only their
-- direction and vendor (copied from their call below); refolding such a call later loses the
-- numbers and agent the old writer had merged into the call row.
ALTER TABLE call_events
    ADD COLUMN vendor                text,
    ADD COLUMN direction             text,
    ADD COLUMN from_raw              text,
    ADD COLUMN from_e164             text,
    ADD COLUMN to_raw                text,
    ADD COLUMN to_e164               text,
    ADD COLUMN agent_extension       text,
    ADD COLUMN agent_number          text,
    ADD COLUMN agent_email           text,
    ADD COLUMN agent_id              text,
    ADD COLUMN agent_match           text,
    ADD COLUMN contact_ids           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN contact_match         text,
    ADD COLUMN responsible_agent_id  text,
    ADD COLUMN disposition           text,
    ADD COLUMN hangup_cause          text,
    ADD COLUMN recording_url         text,
    ADD COLUMN recording_id          text;

UPDATE call_events e SET vendor = c.vendor, direction = c.direction
FROM calls c WHERE c.source_id = e.source_id AND c.call_id = e.call_id;

-- Status and outcome were generated from the times; the fold now decides them, with the full set
-- of outcomes. Existing rows keep what they showed.
ALTER TABLE calls ADD COLUMN status_new text, ADD COLUMN outcome_new text;
UPDATE calls SET status_new = status, outcome_new = outcome;
ALTER TABLE calls DROP COLUMN status, DROP COLUMN outcome;
ALTER TABLE calls RENAME COLUMN status_new TO status;
ALTER TABLE calls RENAME COLUMN outcome_new TO outcome;
ALTER TABLE calls
    ALTER COLUMN status SET DEFAULT 'ringing',
    ALTER COLUMN status SET NOT NULL,
    ADD CONSTRAINT calls_status CHECK (status IN ('ringing', 'answered', 'ended')),
    ADD CONSTRAINT calls_outcome CHECK (outcome IN ('answered', 'missed', 'abandoned_in_ivr',
        'abandoned_in_queue', 'busy', 'no_answer', 'rejected', 'failed', 'voicemail', 'unknown')),
    -- The vendor's disposition of the call as a whole.
    ADD COLUMN disposition           text,
    -- The answering (or, outbound, calling) agent, beside the agent_number/agent_email of 0001.
    ADD COLUMN agent_extension       text,
    ADD COLUMN agent_id              text,
    ADD COLUMN agent_match           text,
    -- Every identifier of every agent on any leg (directory id, extension, number, lower-case
    -- email): the query API's agent filter, one GIN lookup.
    ADD COLUMN agents                text[] NOT NULL DEFAULT '{}',
    ADD COLUMN contact_ids           text[] NOT NULL DEFAULT '{}',
    ADD COLUMN contact_match         text,
    ADD COLUMN responsible_agent_id  text,
    ADD COLUMN recording_id          text,
    ADD COLUMN leg_count             integer NOT NULL DEFAULT 0,
    -- Set once by the settle sweep; part of the fold's input from then on.
    ADD COLUMN settled               boolean NOT NULL DEFAULT false,
    ADD COLUMN completion            text CHECK (completion IN ('end_marker', 'settled')),
    ADD COLUMN completed_at          timestamptz,
    -- Wall-clock time of the last batch that brought a new event: the settle timer. Vendor times
    -- are not used because a replay or a delayed webhook carries old ones. Not indexed, so that
    -- the update of every batch can stay on its page (HOT); the sweep reads the open calls only.
    ADD COLUMN last_event_at         timestamptz NOT NULL DEFAULT now(),
    -- Grows by one each time the record changes (`content_hash` tells); `published_version` is
    -- the highest the calls topic has acknowledged.
    ADD COLUMN version               bigint NOT NULL DEFAULT 0,
    ADD COLUMN published_version     bigint NOT NULL DEFAULT 0,
    ADD COLUMN content_hash          bytea,
    -- A hash per leg row as last written (32 hex digits, then the leg id), so that a batch
    -- rewrites only the legs it changed.
    ADD COLUMN leg_hashes            text[] NOT NULL DEFAULT '{}';

-- Calls from before this migration count as complete and already announced: they were never
-- promised on the calls topic, and flooding it with them on upgrade helps nobody.
UPDATE calls SET version = 1, published_version = 1, settled = true, completion = 'settled',
                 completed_at = COALESCE(ended_at, updated_at);

-- Keyset pagination of the query API (newest first), and its filters.
DROP INDEX calls_by_started_at;
CREATE INDEX calls_by_start ON calls (started_at, source_id, call_id);
CREATE INDEX calls_by_from_number ON calls (from_number);
CREATE INDEX calls_by_to_number ON calls (to_number);
CREATE INDEX calls_by_agents ON calls USING gin (agents);
CREATE INDEX calls_by_contact ON calls USING gin (contact_ids);
-- The settle sweep scans only calls still open: the calls in progress and those settling.
CREATE INDEX calls_open ON calls (source_id, call_id) WHERE completed_at IS NULL;
-- Room on each page for the next version of a row, so that most updates are HOT.
ALTER TABLE calls SET (fillfactor = 70);

-- Outbox: the Avro CallRecord of each complete call whose latest version the calls topic has not
-- acknowledged, written in the same transaction as the call. The publisher claims rows for a
-- short lease (two replicas never produce the same row at once; a crash lets the lease lapse),
-- produces them, then deletes the row if its version is still the one produced.
CREATE TABLE call_outbox (
    source_id    text NOT NULL,
    call_id      text NOT NULL,
    version      bigint NOT NULL,
    record       bytea NOT NULL,
    lease_until  timestamptz,
    PRIMARY KEY (source_id, call_id),
    FOREIGN KEY (source_id, call_id) REFERENCES calls (source_id, call_id)
);

ALTER TABLE call_legs ADD COLUMN status_new text;
UPDATE call_legs SET status_new = status;
ALTER TABLE call_legs DROP COLUMN status;
ALTER TABLE call_legs RENAME COLUMN status_new TO status;
ALTER TABLE call_legs
    ALTER COLUMN status SET DEFAULT 'ringing',
    ALTER COLUMN status SET NOT NULL,
    ADD CONSTRAINT call_legs_status CHECK (status IN ('ringing', 'answered', 'ended')),
    -- Who answered, as opposed to who only rang.
    ADD COLUMN answered          boolean NOT NULL DEFAULT false,
    ADD COLUMN rang_at           timestamptz,
    ADD COLUMN disposition       text,
    ADD COLUMN agent_extension   text,
    ADD COLUMN agent_id          text,
    ADD COLUMN agent_match       text,
    ADD COLUMN recording_url     text,
    ADD COLUMN recording_id      text;
UPDATE call_legs SET answered = answered_at IS NOT NULL;
ALTER TABLE call_legs SET (fillfactor = 70);
