-- The append path writes a group's events, stream versions and command outcomes in the same
-- statement that takes the position range from es_log_head (one round trip while the head's row
-- lock is held, docs/adr/0001), so the outcomes are encoded before the range is known: their
-- positions are then relative to position_base (the position before the group's first event).
-- NULL: the outcome's positions are absolute (rows written before this migration).
ALTER TABLE es_commands ADD COLUMN position_base BIGINT;
