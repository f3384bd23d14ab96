-- The HTTP layer's own tables. Migrated by emporium-api with its own migrations table
-- (_emporium_api_migrations), independent of the event store's schema.

CREATE TABLE IF NOT EXISTS api_keys (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    scopes              TEXT[] NOT NULL,
    -- SHA-256 of the secret part of the key; the secret itself is never stored.
    secret_sha256       BYTEA NOT NULL CHECK (octet_length(secret_sha256) = 32),
    created_at_micros   BIGINT NOT NULL,
    revoked_at_micros   BIGINT
);

CREATE TABLE IF NOT EXISTS idempotency_records (
    api_key_id          TEXT NOT NULL,
    idempotency_key     TEXT NOT NULL,
    -- SHA-256 of method, path and body of the first request.
    fingerprint         BYTEA NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('pending', 'completed')),
    -- Pending only: the owner of the record and when another node may take it over.
    lock_token          UUID,
    lease_until_micros  BIGINT,
    -- Completed only: the response a retry gets back.
    status              SMALLINT,
    headers             TEXT,
    body                BYTEA,
    created_at_micros   BIGINT NOT NULL,
    expires_at_micros   BIGINT NOT NULL,
    PRIMARY KEY (api_key_id, idempotency_key)
);

CREATE INDEX IF NOT EXISTS idempotency_records_expires_at
    ON idempotency_records (expires_at_micros);
