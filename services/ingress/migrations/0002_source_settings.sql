-- Vendor authentication and per-source settings (vendor adapters, #2).

-- The vendor's own signing key where the vendor signs its webhooks (Twilio auth token, Zadarma API
-- secret, Mango salt, Aircall token). Unlike the generated secret it must be kept as given: an
-- HMAC cannot be checked against a hash of its key. Restrict access to this table accordingly.
ALTER TABLE sources ADD COLUMN signing_secret text;

-- Adapter settings as JSON (`public_url`, `api_key`, `timezone`); validated by the CLI, and
-- checked again when loaded (a row this version cannot read is skipped, not fatal).
ALTER TABLE sources ADD COLUMN settings jsonb NOT NULL DEFAULT '{}'::jsonb;
