-- The outbox counted as it changes, so that `status`, the status page, `/metrics` and `/readyz`
-- read a few rows instead of scanning a million. Triggers keep the counts in the statement that
-- changes a row, whatever the statement: nothing can forget them.
--
-- SQLite has one writer at a time and row triggers only: each row's change is added to its
-- key's one counter row (no contention to avoid, unlike PostgreSQL's appended changes).
CREATE TABLE outbox_counts (
    campaign_id INTEGER NOT NULL,
    state       TEXT NOT NULL,
    -- 1: skipped because the address is on the suppression list.
    suppressed  INTEGER NOT NULL,
    -- Pending or failed with an error: the relay's reply code, 0 for an error without one; else -1.
    error_code  INTEGER NOT NULL,
    -- Sent: the hour of the send (Unix seconds / 3600), for the chart; else -1.
    sent_hour   INTEGER NOT NULL,
    n           INTEGER NOT NULL,
    -- Errors: when the group last changed, and one of its replies (from that change).
    last_at     INTEGER,
    last_reason TEXT,
    UNIQUE (campaign_id, state, suppressed, error_code, sent_hour)
);

-- The key of a row (written out in each trigger: SQLite has no functions in SQL).
--   suppressed: CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END
--   error_code: CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
--               THEN COALESCE(smtp_code, 0) ELSE -1 END
--   sent_hour:  CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts VALUES (NEW.campaign_id, NEW.state,
        CASE WHEN NEW.state = 'skipped' AND NEW.reason = 'suppressed' THEN 1 ELSE 0 END,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL
             THEN COALESCE(NEW.smtp_code, 0) ELSE -1 END,
        CASE WHEN NEW.state = 'sent' THEN COALESCE(NEW.sent_at, 0) / 3600 ELSE -1 END,
        1,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL THEN NEW.updated_at END,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL THEN NEW.reason END)
    ON CONFLICT (campaign_id, state, suppressed, error_code, sent_hour) DO UPDATE SET n = n + 1,
        last_reason = CASE WHEN excluded.last_at >= COALESCE(last_at, 0) THEN excluded.last_reason ELSE last_reason END,
        last_at = MAX(COALESCE(last_at, 0), COALESCE(excluded.last_at, 0));
END;

CREATE TRIGGER outbox_counts_update AFTER UPDATE OF state, reason, smtp_code, sent_at ON outbox
WHEN NEW.state IS NOT OLD.state OR NEW.reason IS NOT OLD.reason
  OR NEW.smtp_code IS NOT OLD.smtp_code OR NEW.sent_at IS NOT OLD.sent_at
BEGIN
    UPDATE outbox_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND state = OLD.state
      AND suppressed = CASE WHEN OLD.state = 'skipped' AND OLD.reason = 'suppressed' THEN 1 ELSE 0 END
      AND error_code = CASE WHEN OLD.state IN ('pending', 'failed') AND OLD.reason IS NOT NULL
                            THEN COALESCE(OLD.smtp_code, 0) ELSE -1 END
      AND sent_hour = CASE WHEN OLD.state = 'sent' THEN COALESCE(OLD.sent_at, 0) / 3600 ELSE -1 END;
    INSERT INTO outbox_counts VALUES (NEW.campaign_id, NEW.state,
        CASE WHEN NEW.state = 'skipped' AND NEW.reason = 'suppressed' THEN 1 ELSE 0 END,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL
             THEN COALESCE(NEW.smtp_code, 0) ELSE -1 END,
        CASE WHEN NEW.state = 'sent' THEN COALESCE(NEW.sent_at, 0) / 3600 ELSE -1 END,
        1,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL THEN NEW.updated_at END,
        CASE WHEN NEW.state IN ('pending', 'failed') AND NEW.reason IS NOT NULL THEN NEW.reason END)
    ON CONFLICT (campaign_id, state, suppressed, error_code, sent_hour) DO UPDATE SET n = n + 1,
        last_reason = CASE WHEN excluded.last_at >= COALESCE(last_at, 0) THEN excluded.last_reason ELSE last_reason END,
        last_at = MAX(COALESCE(last_at, 0), COALESCE(excluded.last_at, 0));
END;

CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND state = OLD.state
      AND suppressed = CASE WHEN OLD.state = 'skipped' AND OLD.reason = 'suppressed' THEN 1 ELSE 0 END
      AND error_code = CASE WHEN OLD.state IN ('pending', 'failed') AND OLD.reason IS NOT NULL
                            THEN COALESCE(OLD.smtp_code, 0) ELSE -1 END
      AND sent_hour = CASE WHEN OLD.state = 'sent' THEN COALESCE(OLD.sent_at, 0) / 3600 ELSE -1 END;
END;

-- The rows already there.
INSERT INTO outbox_counts
SELECT campaign_id, state, suppressed, error_code, sent_hour, COUNT(*),
       MAX(CASE WHEN error_code >= 0 THEN updated_at END),
       MAX(CASE WHEN error_code >= 0 THEN reason END)
FROM (SELECT campaign_id, state, updated_at, reason,
        CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
        CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
             THEN COALESCE(smtp_code, 0) ELSE -1 END AS error_code,
        CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END AS sent_hour
      FROM outbox)
GROUP BY 1, 2, 3, 4, 5;
