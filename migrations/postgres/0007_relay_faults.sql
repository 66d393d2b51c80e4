-- Why a campaign was paused when avvisi paused it itself (the circuit breaker), so operators
-- see it in `campaign show` and `status`; NULL when an operator paused it or it runs.
ALTER TABLE campaigns ADD COLUMN paused_reason TEXT;

-- What happened to a message before its current state, oldest first: a failure that
-- `avvisi retry --failed` put back, or a streak the circuit breaker gave back. `explain` shows it.
CREATE TABLE outbox_history (
    id          BIGSERIAL PRIMARY KEY,
    outbox_id   BIGINT NOT NULL REFERENCES outbox (id),
    at          BIGINT NOT NULL,
    -- The state the message left, and what moved it back.
    state       TEXT NOT NULL,
    event       TEXT NOT NULL,
    reason      TEXT,
    smtp_code   BIGINT,
    attempts    BIGINT NOT NULL
);
CREATE INDEX outbox_history_message ON outbox_history (outbox_id);
