-- Source secrets at rest (#18): a source's signing secret and vendor API client secret, sealed
-- together with `sources.secrets_key` (AES-256-GCM, `switchboard_core::source_secrets`). Expand
-- only: the plaintext `signing_secret` column and the settings' `api_client_secret` stay, so a
-- release from before this one still reads the sources it wrote; new sources are written sealed
-- (an older release reads no signing secret for them during a rolling upgrade), and
-- `switchboard sources reseal` seals the older rows and clears their plaintext. A later release
-- drops `signing_secret` once no row holds it (the contract step).
ALTER TABLE sources ADD COLUMN secrets_sealed bytea;
