INSERT INTO calls ({columns})
SELECT {values}
FROM {unnest}
