-- avvisi schema (PostgreSQL). Times are UTC Unix seconds; booleans are 0/1.
-- Keep in step with ../sqlite/0001_init.sql: same tables, columns and meaning.

-- The portal's users as of the latest snapshot import.
CREATE TABLE users (
    user_id                  TEXT PRIMARY KEY,
    fiscal_code              TEXT NOT NULL,
    first_name               TEXT NOT NULL,
    last_name                TEXT NOT NULL,
    email                    TEXT NOT NULL,
    institutional_email      TEXT,
    registration             TEXT NOT NULL CHECK (registration IN ('started', 'completed')),
    enabled                  BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    pending_email            TEXT,
    code_regeneration        TEXT NOT NULL CHECK (code_regeneration IN ('none', 'started')),
    province                 TEXT,
    -- 1 when `email` is an @istruzione.it mailbox (decided once, at import, in Rust).
    registered_institutional BIGINT NOT NULL CHECK (registered_institutional IN (0, 1)),
    portal_updated_at        BIGINT,
    -- The import that last saw this user; `present` = 0 once a full snapshot no longer has them.
    import_id                BIGINT NOT NULL,
    present                  BIGINT NOT NULL DEFAULT 1
);

-- One row per snapshot import (an audit trail of what the daemon believed and when).
CREATE TABLE imports (
    id          BIGSERIAL PRIMARY KEY,
    source      TEXT NOT NULL,
    mode        TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    rows_read   BIGINT NOT NULL DEFAULT 0,
    rows_new    BIGINT NOT NULL DEFAULT 0,
    rows_known  BIGINT NOT NULL DEFAULT 0,
    rows_stale  BIGINT NOT NULL DEFAULT 0,
    rows_rejected BIGINT NOT NULL DEFAULT 0,
    users_gone  BIGINT NOT NULL DEFAULT 0
);

-- Validated rows of the import in progress; emptied when the import commits.
CREATE TABLE import_rows (
    import_id                BIGINT NOT NULL,
    line                     BIGINT NOT NULL,
    user_id                  TEXT NOT NULL,
    fiscal_code              TEXT NOT NULL,
    first_name               TEXT NOT NULL,
    last_name                TEXT NOT NULL,
    email                    TEXT NOT NULL,
    institutional_email      TEXT,
    registration             TEXT NOT NULL,
    enabled                  BIGINT NOT NULL,
    pending_email            TEXT,
    code_regeneration        TEXT NOT NULL,
    province                 TEXT,
    registered_institutional BIGINT NOT NULL,
    portal_updated_at        BIGINT
);
CREATE INDEX import_rows_user ON import_rows (import_id, user_id);

-- A campaign pairs an audience with a template. Reminder campaigns come from the calendar.
CREATE TABLE campaigns (
    id              BIGSERIAL PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('reminder', 'oneoff', 'reopening')),
    audience        TEXT NOT NULL,
    template        TEXT NOT NULL,
    filter_province TEXT,
    state           TEXT NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'finished')),
    -- Random token that makes this campaign's Message-IDs unique across installations.
    uid             TEXT NOT NULL,
    send_at         BIGINT,
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL,
    started_at      BIGINT,
    finished_at     BIGINT
);

-- One row per email: (campaign, user, step) is planned at most once.
CREATE TABLE outbox (
    id              BIGSERIAL PRIMARY KEY,
    campaign_id     BIGINT NOT NULL REFERENCES campaigns (id),
    user_id         TEXT NOT NULL,
    step            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    template        TEXT NOT NULL,
    template_digest TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'sending', 'sent', 'skipped', 'failed', 'expired')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    expires_at      BIGINT,
    -- Why the row is skipped, expired or failed, or the last transient error.
    reason          TEXT,
    -- The relay's reply code of the last failure, when there was a reply.
    smtp_code       BIGINT,
    message_id      TEXT NOT NULL,
    claim_token     TEXT,
    lease_until     BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    UNIQUE (campaign_id, user_id, step)
);
CREATE INDEX outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX outbox_claim ON outbox (claim_token);
CREATE INDEX outbox_user ON outbox (user_id);
