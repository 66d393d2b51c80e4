-- Bounces and the suppression list (PostgreSQL). Keep in step with ../sqlite/0011_bounces.sql.

-- Addresses avvisi does not write to again: a relay said the mailbox does not exist, a returned
-- mail said so, or an operator asked. Stored lower-cased (mailbox names are compared without
-- case in practice, and one spelling must not slip past another).
CREATE TABLE suppressions (
    address    TEXT PRIMARY KEY,
    reason     TEXT NOT NULL,
    source     TEXT NOT NULL CHECK (source IN ('operator', 'relay', 'bounce')),
    created_at BIGINT NOT NULL
);

-- Returned mail read by `avvisi bounces import`, one row per message, recognised or not.
-- `dedupe_key` (the bounce's own Message-ID, or a hash of its content) makes a second import of
-- the same mailbox change nothing.
CREATE TABLE bounces (
    id          BIGSERIAL PRIMARY KEY,
    dedupe_key  TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL CHECK (kind IN ('hard', 'soft', 'unrecognised')),
    -- The final recipient, lower-cased, when the bounce names one.
    recipient   TEXT,
    -- The RFC 3463 status, e.g. 5.1.1, and the remote server's words.
    status      TEXT,
    diagnostic  TEXT,
    -- The message that bounced, when the VERP token or the Message-ID names it.
    outbox_id   BIGINT REFERENCES outbox (id),
    -- When the bounce was written (its Date), else when it was imported.
    at          BIGINT NOT NULL,
    imported_at BIGINT NOT NULL,
    -- The file (and message number of an mbox) it came from.
    origin      TEXT NOT NULL
);
CREATE INDEX bounces_recipient ON bounces (recipient, kind, at);

-- Per-installation secrets that never leave the database: `verp` keys the tokens of the
-- envelope senders (`bounces+TOKEN@domain`), so that a forged bounce cannot name a message.
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
INSERT INTO secrets (name, value) VALUES ('verp', replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
