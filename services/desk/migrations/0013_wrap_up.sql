-- Dispositions and tags (#17): an agent's wrap-up of a call, and the call's queue (the campaign
-- a disposition is filed under in uContact). Expand only: new nullable columns
-- and a new table; a release from before this one reads and writes the same rows as it did (it
-- leaves the new columns NULL, and does not know the new event kind).

-- The disposition codes agents choose from, per source; `*` is the default list of every source
-- without its own. `position` orders them in the panel.
CREATE TABLE disposition_codes (
    source_id   text NOT NULL CHECK (source_id = '*' OR source_id ~ '^[A-Za-z0-9_.:@-]{1,128}$'),
    code        text NOT NULL CHECK (code ~ '^[A-Za-z0-9_.:-]{1,64}$'),
    label       text NOT NULL CHECK (length(label) BETWEEN 1 AND 200),
    position    integer NOT NULL,
    PRIMARY KEY (source_id, code)
);

-- A wrap-up event's content (kind 'wrap_up'); NULL on every other event. And the queue,
-- campaign or hunt group an event names (uContact's campaign).
ALTER TABLE call_events
    ADD COLUMN queue             text,
    ADD COLUMN wrap_up_code      text,
    ADD COLUMN wrap_up_label     text,
    ADD COLUMN wrap_up_note      text,
    ADD COLUMN wrap_up_tags      text[],
    ADD COLUMN wrap_up_agent_id  text,
    ADD COLUMN wrap_up_at        timestamptz;

-- The call's queue and its latest wrap-up, as folded. No index on the tags yet: the query API's
-- tag filter reads calls already narrowed by time.
ALTER TABLE calls
    ADD COLUMN queue             text,
    ADD COLUMN wrap_up_code      text,
    ADD COLUMN wrap_up_label     text,
    ADD COLUMN wrap_up_note      text,
    ADD COLUMN wrap_up_tags      text[],
    ADD COLUMN wrap_up_agent_id  text,
    ADD COLUMN wrap_up_at        timestamptz;
