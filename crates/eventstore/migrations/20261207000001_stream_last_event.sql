-- The id of each stream's last event, returned with its version when a group locks its stream
-- rows, so that an append may expect the version *and* the event it was decided on
-- (ExpectedVersion::LastEvent: early lock release with several nodes, docs/adr/0002).
-- A copy for the fast path: NULL on rows written before this migration, and left behind by a
-- node still on an older binary. Where it disagrees with an expectation at the expected
-- version, the append reads the event itself from es_events (src/postgres.rs, commit_group).
ALTER TABLE es_streams ADD COLUMN last_event_id UUID;
