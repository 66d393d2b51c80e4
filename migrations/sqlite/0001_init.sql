-- avvisi schema (SQLite). Times are UTC Unix seconds; booleans are 0/1.
-- Keep in step with ../postgres/0001_init.sql: same tables, columns and meaning.

-- The portal's users as of the latest snapshot import.
CREATE TABLE users (
    user_id                  TEXT PRIMARY KEY,
    fiscal_code              TEXT NOT NULL,
    first_name               TEXT NOT NULL,
    last_name                TEXT NOT NULL,
    email                    TEXT NOT NULL,
    institutional_email      TEXT,
    registration             TEXT NOT NULL CHECK (registration IN ('started', 'completed')),
    enabled                  INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    pending_email            TEXT,
    code_regeneration        TEXT NOT NULL CHECK (code_regeneration IN ('none', 'started')),
    province                 TEXT,
    -- 1 when `email` is an @istruzione.it mailbox (decided once, at import, in Rust).
    registered_institutional INTEGER NOT NULL CHECK (registered_institutional IN (0, 1)),
    portal_updated_at        INTEGER,
    -- The import that last saw this user; `present` = 0 once a full snapshot no longer has them.
    import_id                INTEGER NOT NULL,
    present                  INTEGER NOT NULL DEFAULT 1
);

-- One row per snapshot import (an audit trail of what the daemon believed and when).
CREATE TABLE imports (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    source      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    rows_read   INTEGER NOT NULL DEFAULT 0,
    rows_new    INTEGER NOT NULL DEFAULT 0,
    rows_known  INTEGER NOT NULL DEFAULT 0,
    rows_stale  INTEGER NOT NULL DEFAULT 0,
    rows_rejected INTEGER NOT NULL DEFAULT 0,
    users_gone  INTEGER NOT NULL DEFAULT 0
);

-- Validated rows of the import in progress; emptied when the import commits.
CREATE TABLE import_rows (
    import_id                INTEGER NOT NULL,
    line                     INTEGER NOT NULL,
    user_id                  TEXT NOT NULL,
    fiscal_code              TEXT NOT NULL,
    first_name               TEXT NOT NULL,
    last_name                TEXT NOT NULL,
    email                    TEXT NOT NULL,
    institutional_email      TEXT,
    registration             TEXT NOT NULL,
    enabled                  INTEGER NOT NULL,
    pending_email            TEXT,
    code_regeneration        TEXT NOT NULL,
    province                 TEXT,
    registered_institutional INTEGER NOT NULL,
    portal_updated_at        INTEGER
);
CREATE INDEX import_rows_user ON import_rows (import_id, user_id);

-- A campaign pairs an audience with a template. Reminder campaigns come from the calendar.
CREATE TABLE campaigns (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('reminder', 'oneoff', 'reopening')),
    audience        TEXT NOT NULL,
    template        TEXT NOT NULL,
    filter_province TEXT,
    state           TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'finished')),
    -- Random token that makes this campaign's Message-IDs unique across installations.
    uid             TEXT NOT NULL,
    send_at         INTEGER,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
);

-- One row per email: (campaign, user, step) is planned at most once.
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    campaign_id     INTEGER NOT NULL REFERENCES campaigns (id),
    user_id         TEXT NOT NULL,
    step            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    template        TEXT NOT NULL,
    template_digest TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'failed', 'expired')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    expires_at      INTEGER,
    -- Why the row is skipped, expired or failed, or the last transient error.
    reason          TEXT,
    -- The relay's reply code of the last failure, when there was a reply.
    smtp_code       INTEGER,
    message_id      TEXT NOT NULL,
    claim_token     TEXT,
    lease_until     INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    UNIQUE (campaign_id, user_id, step)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_claim ON outbox (claim_token);
CREATE INDEX outbox_user ON outbox (user_id);
