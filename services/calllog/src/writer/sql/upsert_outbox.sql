INSERT INTO call_outbox ({columns})
SELECT {values}
FROM {unnest}
ON CONFLICT (source_id, call_id) DO UPDATE SET {excluded}, lease_until = NULL
