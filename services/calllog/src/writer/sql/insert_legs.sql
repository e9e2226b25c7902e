INSERT INTO call_legs ({columns})
SELECT {values}
FROM {unnest}
ON CONFLICT (source_id, call_id, leg_id) DO UPDATE SET {excluded}, updated_at = now()
