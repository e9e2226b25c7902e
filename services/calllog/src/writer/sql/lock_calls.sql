SELECT pg_advisory_xact_lock(k), now()
FROM (SELECT DISTINCT hashtextextended(source_id || ':' || call_id, 0) AS k
      FROM UNNEST($1::text[], $2::text[]) AS u(source_id, call_id)
      ORDER BY k) keys
