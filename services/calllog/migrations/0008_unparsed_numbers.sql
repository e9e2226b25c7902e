-- The call log keeps a number it could not read as the PBX wrote it (`07700 900103`, in a UK range
-- reserved for drama, is no valid number; neither is an extension), and the query API finds such a
-- number by its digits, however it was spaced. Only those rows are indexed: E.164 numbers are
-- looked up as they are (0004). Both columns are indexed already, so updates stay HOT as before.
CREATE INDEX calls_by_unparsed_from ON calls ((regexp_replace(from_number, '[^0-9]', '', 'g')))
    WHERE from_number !~ '^\+[1-9][0-9]{6,14}$';
CREATE INDEX calls_by_unparsed_to ON calls ((regexp_replace(to_number, '[^0-9]', '', 'g')))
    WHERE to_number !~ '^\+[1-9][0-9]{6,14}$';
