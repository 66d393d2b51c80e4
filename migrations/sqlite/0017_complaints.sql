-- Complaints (sqlite): the feedback-loop reports (ARF, RFC 5965) read by `avvisi complaints
-- import`, one row per report; `dedupe_key` (the report's Message-ID, or a hash of its
-- content) makes a second import of the same mailbox change nothing.
CREATE TABLE complaints (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key  TEXT NOT NULL UNIQUE,
    -- The message complained about, when its VERP token, Message-ID or Feedback-ID names it;
    -- NULL: not linked (anyone can write to the feedback mailbox), it changed nothing.
    outbox_id   BIGINT REFERENCES outbox (id),
    campaign_id BIGINT,
    user_id     TEXT,
    -- The report's Feedback-Type (abuse, fraud, ...).
    feedback_type TEXT NOT NULL,
    at          BIGINT NOT NULL,
    imported_at BIGINT NOT NULL,
    origin      TEXT NOT NULL
);
CREATE INDEX complaints_campaign ON complaints (campaign_id);
