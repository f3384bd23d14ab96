-- The event store's schema. Migrated by emporium-eventstore with its own migrations table
-- (_emporium_eventstore_migrations), independent of the other crates' schemas.

-- Every event, by global position. Positions are allocated under the row lock of es_log_head,
-- held until commit, so they become visible in position order (docs/adr/0001).
CREATE TABLE es_events (
    position            BIGINT PRIMARY KEY,
    stream_id           TEXT NOT NULL,
    version             BIGINT NOT NULL CHECK (version >= 0),
    event_id            UUID NOT NULL,
    event_type          TEXT NOT NULL,
    payload             BYTEA NOT NULL,
    correlation_id      UUID,
    causation_id        UUID,
    command_id          TEXT,
    api_key_id          TEXT,
    recorded_at_micros  BIGINT NOT NULL,
    UNIQUE (stream_id, version)
);

-- The current version of every stream (-1: the row exists, the stream has no events yet). Its
-- rows are the locks that serialize appends to one stream.
CREATE TABLE es_streams (
    stream_id   TEXT PRIMARY KEY,
    version     BIGINT NOT NULL CHECK (version >= -1)
);

-- The last allocated (and, once committed, visible) position: one row.
CREATE TABLE es_log_head (
    id          BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
    position    BIGINT NOT NULL CHECK (position >= 0)
);
INSERT INTO es_log_head (id, position) VALUES (TRUE, 0);

-- Command ids already appended, with the outcome a retry gets back (postcard of AppendOutcome).
CREATE TABLE es_commands (
    command_id  TEXT PRIMARY KEY,
    outcome     BYTEA
);

-- The latest snapshot of each stream.
CREATE TABLE es_snapshots (
    stream_id   TEXT PRIMARY KEY,
    version     BIGINT NOT NULL,
    schema      TEXT NOT NULL,
    state       BYTEA NOT NULL
);
