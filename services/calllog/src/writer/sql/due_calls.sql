SELECT source_id, call_id FROM (
    SELECT c.source_id, c.call_id FROM open_calls o
    JOIN calls c ON c.source_id = o.source_id AND c.call_id = o.call_id
    WHERE c.completed_at IS NULL
      AND c.last_event_at < now() - $1::int8 * interval '1 millisecond'
      AND (c.status <> 'ringing' OR c.last_event_at < now() - $2::int8 * interval '1 millisecond')
    ORDER BY c.last_event_at
    LIMIT $3) due
WHERE pg_try_advisory_xact_lock(hashtextextended(source_id || ':' || call_id, 0))
