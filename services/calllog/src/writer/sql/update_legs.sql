UPDATE call_legs AS l SET {set}, updated_at = now()
FROM {unnest}
WHERE l.source_id = u.source_id AND l.call_id = u.call_id AND l.leg_id = u.leg_id
