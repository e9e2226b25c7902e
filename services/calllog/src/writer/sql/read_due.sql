SELECT source_id, call_id, version, content_hash, settled, completed_at, leg_hashes, revision,
       vendor, now()
FROM calls
WHERE (source_id, call_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))
  AND completed_at IS NULL
  AND last_event_at < now() - $3::int8 * interval '1 millisecond'
  AND (status <> 'ringing' OR last_event_at < now() - $4::int8 * interval '1 millisecond')
