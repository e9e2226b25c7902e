-- The dispatcher's consumer looks up a call's pending deliveries by source and call (a newer record
-- of the call refreshes the ones that wait for it), which `deliveries_by_call`, led by the
-- profile, could not serve: each lookup scanned every pending delivery (BENCHMARKS.md,
-- dispatcher). The same columns led by the call serve that lookup and the worker's "no earlier
-- pending delivery of this profile and call" check alike, so the new index replaces the old one.
-- Safe for the previous release: it runs the same queries, only planned on the new index.
CREATE INDEX deliveries_pending_by_call ON deliveries (source_id, call_id, profile_id, seq)
    WHERE status = 'pending';
DROP INDEX deliveries_by_call;

-- A queue: every delivery is inserted, updated a few times and settled within seconds, which leaves
-- dead index entries the claims walk past. Vacuum and analyze it after 2% of its rows changed, not
-- PostgreSQL's default 20% / 10%.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
