-- The relay's quota, shared by every daemon on this database and kept across restarts: how many
-- messages were let out in each slot of time. `scope` is 'hour' (slots are minutes, and the
-- last 60 of them are summed) or 'second' (slots are seconds). Daemons take slots in small
-- leases (see src/deliver/quota.rs); old slots are deleted as new ones are taken.
CREATE TABLE rate_usage (
    scope TEXT NOT NULL,
    slot  BIGINT NOT NULL,
    used  BIGINT NOT NULL,
    PRIMARY KEY (scope, slot)
);
