-- The console's foundation: accounts, a second person's approval of a one-off campaign, and the
-- append-only audit log. Keep in step with ../sqlite/0015_console.sql.

-- People who may sign in to the console. The password is an Argon2id PHC string, never the
-- password itself.
CREATE TABLE accounts (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'editor', 'admin')),
    password_hash TEXT NOT NULL,
    disabled      BIGINT NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- Who created a one-off campaign (an operating-system user or an account's name): its approver
-- must be someone else. NULL for the calendar's campaigns and those created before this column.
ALTER TABLE campaigns ADD COLUMN created_by TEXT;

-- Each decision on a one-off campaign; the latest one counts. An approval freezes the audience
-- (its size, the SHA-256 of its sorted user ids, the ids themselves in approval_members, and ten
-- rendered samples as JSON); `stale_at` is set when a launch found the audience changed.
CREATE TABLE campaign_approvals (
    id              BIGSERIAL PRIMARY KEY,
    campaign_id     BIGINT NOT NULL REFERENCES campaigns (id),
    decision        TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
    decided_by      TEXT NOT NULL,
    decided_at      BIGINT NOT NULL,
    reason          TEXT,
    audience_size   BIGINT,
    audience_sha256 TEXT,
    samples         TEXT,
    stale_at        BIGINT
);
CREATE INDEX campaign_approvals_campaign ON campaign_approvals (campaign_id, id);

-- The audience an approval saw, to tell a launch how many users were added and removed since.
CREATE TABLE approval_members (
    approval_id BIGINT NOT NULL REFERENCES campaign_approvals (id),
    user_id     TEXT NOT NULL,
    PRIMARY KEY (approval_id, user_id)
);

-- Who did what, when, from where, and how it ended. Written in the transaction of the action it
-- records; never changed or removed (the triggers below refuse it, TRUNCATE included).
CREATE TABLE audit_log (
    id         BIGSERIAL PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    role       TEXT NOT NULL,
    source     TEXT NOT NULL,
    action     TEXT NOT NULL,
    object     TEXT NOT NULL,
    before_summary TEXT,
    after_summary  TEXT,
    outcome    TEXT NOT NULL
);
CREATE INDEX audit_log_at ON audit_log (at, id);

CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: rows cannot be changed or deleted';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
