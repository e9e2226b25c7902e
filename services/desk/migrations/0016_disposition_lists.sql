-- A source's own list of disposition codes exists even when it is empty (a source whose agents
-- choose no code, rather than the default `*` list). Until now a list was only its codes' rows,
-- so an empty list could not be told from no list. Expand only: the release before this one keeps
-- writing `disposition_codes` alone, and this one counts a source with code rows as having its own
-- list whether or not it has a row here.
CREATE TABLE disposition_lists (
    source_id   text PRIMARY KEY CHECK (source_id = '*' OR source_id ~ '^[A-Za-z0-9_.:@-]{1,128}$'),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO disposition_lists (source_id)
SELECT DISTINCT source_id FROM disposition_codes
ON CONFLICT DO NOTHING;
