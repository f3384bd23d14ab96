-- The id of each stream's last event, returned with its version when a group locks its stream
-- rows, so that an append may expect the version *and* the event it was decided on
-- (ExpectedVersion::LastEvent: early lock release with several nodes, docs/adr/0002).
-- NULL on rows written before this migration: such an expectation fails as a conflict once,
-- and the command service retries it on a state read from the log.
ALTER TABLE es_streams ADD COLUMN last_event_id UUID;
