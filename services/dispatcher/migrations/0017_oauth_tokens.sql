-- The OAuth tokens of delivery profiles that reach their CRM as an application (dispatcher
-- `tokens.rs`): the access token and the newest refresh token, sealed with the profile secrets'
-- key, because most CRMs rotate the refresh token on every use and only the newest one works.
-- `seed` is the SHA-256 of the profile's own refresh token the row started from: saving the
-- profile with a different one starts again from it. Expand only: a new table, which the previous
-- release never reads.
CREATE TABLE delivery_oauth_tokens (
    profile_id  text PRIMARY KEY REFERENCES delivery_profiles (id) ON DELETE CASCADE,
    seed        bytea NOT NULL,
    -- NULL until the first trade.
    sealed      bytea,
    expires_at  timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
