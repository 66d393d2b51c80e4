-- Provider deferrals (postgres): a mailbox provider that asks us to slow down (Gmail's
-- `421 4.7.28`, Microsoft's `4.7.650`, Yahoo's `TSS04`...) holds its recipient domain until
-- `held_until` (UTC seconds), shared by every daemon on the database; `strikes` counts the holds
-- in a row, for a backoff that grows (see docs/deliverability.md). A row whose hold ended stays,
-- for the next strike to know the last one.
CREATE TABLE domain_holds (
    domain  TEXT PRIMARY KEY,
    held_until BIGINT NOT NULL,
    strikes BIGINT NOT NULL,
    -- The reply that asked for it, e.g. "421 4.7.28 ... unusual rate ...".
    reply   TEXT NOT NULL,
    -- When the current hold began.
    since   BIGINT NOT NULL
);
CREATE INDEX domain_holds_until ON domain_holds (held_until);
