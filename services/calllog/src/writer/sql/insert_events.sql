INSERT INTO call_events ({columns})
SELECT {values}
FROM {unnest}
ON CONFLICT (source_id, event_id) DO NOTHING
RETURNING source_id, event_id, now()
