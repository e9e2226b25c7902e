WITH completed AS (
    DELETE FROM open_calls o USING UNNEST($3::text[], $4::text[]) AS d(source_id, call_id)
    WHERE o.source_id = d.source_id AND o.call_id = d.call_id
)
INSERT INTO open_calls (source_id, call_id)
SELECT * FROM UNNEST($1::text[], $2::text[])
ON CONFLICT DO NOTHING
