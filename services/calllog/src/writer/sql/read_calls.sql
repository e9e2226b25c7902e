SELECT source_id, call_id, version, content_hash, settled, completed_at, leg_hashes, revision
FROM calls
WHERE (source_id, call_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
