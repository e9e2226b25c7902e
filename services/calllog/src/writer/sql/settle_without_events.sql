UPDATE calls SET settled = true, completion = 'settled', completed_at = now(), revision = $3
WHERE source_id = $1 AND call_id = $2
