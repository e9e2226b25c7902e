-- A random token each write of a call row sets (the writer and the settle sweep, never the
-- publisher, whose `published_version` is not part of the fold). A call-log replica keeps the
-- fold's input of the calls it is writing in memory and updates such a call only where the row
-- still has the revision it wrote last: another replica or a sweep having written the call since
-- turns the update into no row, and the replica refolds that call from the database instead
-- (services/calllog `writer`). Random rather than counted, so that a write the replica expected
-- but that rolled back can never be mistaken for a later one.
ALTER TABLE calls ADD COLUMN revision bigint NOT NULL DEFAULT 0;
