-- Recordings (#5): every recording a call names, the schedule of its resolution through the
-- vendor's API, and its status on the call log.

-- One row per recording the recordings stage has seen, keyed by the id of its stable link
-- (`/v1/recordings/{id}`): a hash of the source, the call and the vendor's recording id (or, when
-- the vendor sent only a URL, that URL), so that every event naming one recording, and every
-- redelivery of them, lands on this row.
--
-- The same rows are the retry schedule (services/recordings `store`): a recording still `pending`
-- is attempted again at `due_at`; a replica claims due rows with `FOR UPDATE SKIP LOCKED` and a
-- short lease, so replicas share the work, a crash lets the lease lapse, and a recording that
-- waits delays nothing else.
CREATE TABLE recordings (
    id                 text PRIMARY KEY,
    source_id          text NOT NULL,
    call_id            text NOT NULL,
    leg_id             text,
    vendor             text NOT NULL,
    -- The vendor's recording id (Telphin RecID, Zadarma call_id_with_rec, Mango recording_id,
    -- Twilio RecordingSid), when it sent one.
    recording_id       text,
    -- The URL the vendor sent, when it sent one: where a link opens for vendors without an API to
    -- ask again.
    vendor_url         text,
    -- The webhook the recording was first seen in, for the events the stage publishes about it.
    raw_id             text NOT NULL,
    -- When ingress received that webhook: the start of every link's validity, so that a
    -- redelivered event gets the same link.
    first_received_at  timestamptz NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'ready', 'failed')),
    -- Attempts made (counted when claimed, so that a recording that crashes its resolver cannot
    -- retry forever), the next one's time, and the lease of the replica working on it.
    attempts           integer NOT NULL DEFAULT 0,
    due_at             timestamptz,
    lease_until        timestamptz,
    -- Why the last attempt failed (for a failed recording, why it was given up).
    last_error         text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (recording_id IS NOT NULL OR vendor_url IS NOT NULL)
);
-- What the resolver polls: pending recordings by due time.
CREATE INDEX recordings_due ON recordings (due_at) WHERE status = 'pending';
CREATE INDEX recordings_by_call ON recordings (source_id, call_id);

-- The stage's status of each event's recording, for the fold.
ALTER TABLE call_events
    ADD COLUMN recording_status  text,
    ADD COLUMN recording_error   text;

-- The call's recording as the fold derives it: ready, pending or failed (with the reason).
ALTER TABLE calls
    ADD COLUMN recording_status  text CHECK (recording_status IN ('pending', 'ready', 'failed')),
    ADD COLUMN recording_error   text;
-- The query API's `recording` filter, chiefly operators looking for failures.
CREATE INDEX calls_by_recording_status ON calls (recording_status) WHERE recording_status IS NOT NULL;
