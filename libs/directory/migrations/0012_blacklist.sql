-- The number blacklist (#17): callers the IVR router refuses before they reach an agent, and that
-- the query API marks on the calls they made or received. Expand only: a new table and its
-- trigger; nothing an older release reads changes.

CREATE TABLE blacklist (
    number      text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    -- Why the number is refused, for the people who manage the list; never sent to a PBX.
    reason      text,
    -- From this time on the entry no longer refuses anyone (kept, and listed as inactive, until
    -- it is deleted). NULL: until deleted.
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Like the directory's tables (0003): one notification per statement, so that every matcher and
-- router reloads within a second, and a bulk import or removal is one reload.
CREATE TRIGGER blacklist_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON blacklist
    FOR EACH STATEMENT EXECUTE FUNCTION notify_directory_change();
