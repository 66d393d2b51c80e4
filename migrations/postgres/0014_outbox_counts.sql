-- The outbox counted as it changes, so that `status`, the status page, `/metrics` and `/readyz`
-- read a few rows instead of scanning a million. Triggers keep the counts in the statement that
-- changes a row, whatever the statement: nothing can forget them.
--
-- PostgreSQL: each statement appends its net change per key (statement-level triggers over
-- transition tables), so concurrent writers never wait on one counter row nor deadlock over
-- two; readers sum, and the planner folds the rows together now and then
-- (`store::counts::fold`).
CREATE TABLE outbox_counts (
    campaign_id BIGINT NOT NULL,
    state       TEXT NOT NULL,
    -- 1: skipped because the address is on the suppression list.
    suppressed  BIGINT NOT NULL,
    -- Pending or failed with an error: the relay's reply code, 0 for an error without one; else -1.
    error_code  BIGINT NOT NULL,
    -- Sent: the hour of the send (Unix seconds / 3600), for the chart; else -1.
    sent_hour   BIGINT NOT NULL,
    n           BIGINT NOT NULL,
    -- Errors: when the group last changed, and one of its replies (from that change).
    last_at     BIGINT,
    last_reason TEXT
);
CREATE INDEX outbox_counts_campaign ON outbox_counts (campaign_id);

-- A row's key (the same three expressions in each branch and in the backfill below; a SQL
-- function would read better but is called once per row, and costs ten times the rest):
--   suppressed: CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END
--   error_code: CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
--               THEN COALESCE(smtp_code, 0) ELSE -1 END
--   sent_hour:  CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END
-- Each branch sums `d` (+1 a row arriving in a key, -1 a row leaving it) per key.
CREATE FUNCTION outbox_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One statement per operation: a transition table exists only for its own operation.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox_counts
        SELECT campaign_id, state, suppressed, error_code, sent_hour, SUM(d),
               MAX(updated_at) FILTER (WHERE error_code >= 0),
               MAX(reason) FILTER (WHERE error_code >= 0)
        FROM (SELECT campaign_id, state, reason, updated_at, 1 AS d,
                CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
                CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
                     THEN COALESCE(smtp_code, 0) ELSE -1 END AS error_code,
                CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END AS sent_hour
              FROM new_rows) k
        GROUP BY 1, 2, 3, 4, 5;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO outbox_counts
        SELECT campaign_id, state, suppressed, error_code, sent_hour, SUM(d),
               MAX(updated_at) FILTER (WHERE error_code >= 0 AND d > 0),
               MAX(reason) FILTER (WHERE error_code >= 0 AND d > 0)
        FROM (SELECT campaign_id, state, reason, updated_at, d,
                CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
                CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
                     THEN COALESCE(smtp_code, 0) ELSE -1 END AS error_code,
                CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END AS sent_hour
              FROM (SELECT campaign_id, state, reason, smtp_code, sent_at, updated_at, 1 AS d
                    FROM new_rows
                    UNION ALL
                    SELECT campaign_id, state, reason, smtp_code, sent_at, updated_at, -1
                    FROM old_rows) c) k
        GROUP BY 1, 2, 3, 4, 5
        -- Rows whose key did not change add nothing, unless they carry an error (a new reply).
        HAVING SUM(d) <> 0 OR MAX(error_code) >= 0;
    ELSE
        INSERT INTO outbox_counts
        SELECT campaign_id, state, suppressed, error_code, sent_hour, SUM(d), NULL, NULL
        FROM (SELECT campaign_id, state, -1 AS d,
                CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
                CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
                     THEN COALESCE(smtp_code, 0) ELSE -1 END AS error_code,
                CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END AS sent_hour
              FROM old_rows) k
        GROUP BY 1, 2, 3, 4, 5;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_changed();
CREATE TRIGGER outbox_counts_update AFTER UPDATE ON outbox
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_changed();
CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION outbox_counts_changed();

-- The rows already there.
INSERT INTO outbox_counts
SELECT campaign_id, state, suppressed, error_code, sent_hour, COUNT(*),
       MAX(updated_at) FILTER (WHERE error_code >= 0),
       MAX(reason) FILTER (WHERE error_code >= 0)
FROM (SELECT campaign_id, state, reason, updated_at,
        CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END AS suppressed,
                CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
                     THEN COALESCE(smtp_code, 0) ELSE -1 END AS error_code,
                CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END AS sent_hour
      FROM outbox) k
GROUP BY 1, 2, 3, 4, 5;

-- The outbox's foreign key to its campaign, checked row by row, cost more than the rest of the
-- rows' writing together at planning (a key-share lock on the one campaign row per planned row:
-- a million locks in one pass). Rows are only ever planned from a campaign the pass has just
-- read, and campaigns are never deleted; SQLite keeps its (cheap) check.
ALTER TABLE outbox DROP CONSTRAINT outbox_campaign_id_fkey;
