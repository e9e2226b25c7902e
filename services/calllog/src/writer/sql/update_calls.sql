UPDATE calls AS c SET
    {set},
    last_event_at = CASE WHEN {next} THEN now() ELSE c.last_event_at END, updated_at = now()
FROM {unnest}
WHERE c.source_id = u.source_id AND c.call_id = u.call_id AND c.revision = u.expected_revision
