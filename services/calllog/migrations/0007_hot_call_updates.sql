-- Most writes to a call row are updates as its events arrive (answered, then ended). PostgreSQL
-- can make such an update HOT (a new row version on the same page, no index touched) only when no
-- indexed column changes, and a column in a partial index's predicate counts. Two indexes of 0004
-- changed on nearly every update: the GIN on `calls.agents` (agents join as they answer) and
-- `calls_open` (its predicate `completed_at IS NULL` flips at completion). Both move to rows that
-- are written once: the agent filter reads each leg's agents, and the settle sweep reads a
-- separate list of the open calls. BENCHMARKS.md has the call-log writer figures.

-- Every identifier of the leg's agent (directory id, extension, number, lower-case email). A
-- call's agents are its legs' agents (the call's agent is one of its legs').
ALTER TABLE call_legs ADD COLUMN agents text[] NOT NULL DEFAULT '{}';
UPDATE call_legs SET agents = ARRAY(
    SELECT DISTINCT k FROM unnest(ARRAY[agent_id, agent_extension, agent_number, lower(agent_email)]) k
    WHERE k IS NOT NULL ORDER BY k)
WHERE COALESCE(agent_id, agent_extension, agent_number, agent_email) IS NOT NULL;
-- Only legs with an agent: the caller's and the IVR's legs, about half, stay out of it.
CREATE INDEX call_legs_by_agents ON call_legs USING gin (agents) WHERE agents <> '{}';
DROP INDEX calls_by_agents;
ALTER TABLE calls DROP COLUMN agents;

-- The calls not complete yet: added with the call, removed when it completes (by its end marker
-- or the settle sweep); a complete call never reopens. No foreign key: the writer adds a call and
-- its entry in one transaction.
CREATE TABLE open_calls (
    source_id text NOT NULL,
    call_id   text NOT NULL,
    PRIMARY KEY (source_id, call_id)
);
INSERT INTO open_calls SELECT source_id, call_id FROM calls WHERE completed_at IS NULL;
DROP INDEX calls_open;
