-- Authentication: platform admins and API keys. Keys are stored only as a keyed hash
-- (HMAC-SHA256 with the server secret); the secret itself is shown once at creation.

ALTER TABLE users ADD COLUMN is_platform_admin boolean NOT NULL DEFAULT false;

CREATE TABLE api_keys (
    id          uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    user_id     uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    prefix      text        NOT NULL,      -- first characters of the key, for recognising it
    key_hash    bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz,
    CONSTRAINT api_keys_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at, id);
CREATE INDEX api_keys_keyset_idx ON api_keys (created_at, id);
