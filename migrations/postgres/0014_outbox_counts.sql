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
    -- Errors: when the group last grew, and that row's reason (one of the group's replies).
    last_at     BIGINT,
    last_reason TEXT
);
CREATE INDEX outbox_counts_campaign ON outbox_counts (campaign_id);

-- The key of a row, in one place for the three triggers.
CREATE FUNCTION outbox_count_key(state TEXT, reason TEXT, smtp_code BIGINT, sent_at BIGINT,
                                 OUT suppressed BIGINT, OUT error_code BIGINT, OUT sent_hour BIGINT)
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN state = 'skipped' AND reason = 'suppressed' THEN 1 ELSE 0 END,
           CASE WHEN state IN ('pending', 'failed') AND reason IS NOT NULL
                THEN COALESCE(smtp_code, 0) ELSE -1 END,
           CASE WHEN state = 'sent' THEN COALESCE(sent_at, 0) / 3600 ELSE -1 END
$$;

CREATE FUNCTION outbox_counts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- One statement per operation: a transition table exists only for its own operation.
    IF TG_OP = 'INSERT' THEN
        INSERT INTO outbox_counts
        SELECT r.campaign_id, r.state, k.suppressed, k.error_code, k.sent_hour, COUNT(*),
               MAX(r.updated_at) FILTER (WHERE k.error_code >= 0),
               (array_agg(r.reason ORDER BY r.updated_at DESC) FILTER (WHERE k.error_code >= 0))[1]
        FROM new_rows r, outbox_count_key(r.state, r.reason, r.smtp_code, r.sent_at) k
        GROUP BY 1, 2, 3, 4, 5;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO outbox_counts
        SELECT c.campaign_id, c.state, k.suppressed, k.error_code, k.sent_hour, SUM(c.d),
               MAX(c.updated_at) FILTER (WHERE k.error_code >= 0 AND c.d > 0),
               (array_agg(c.reason ORDER BY c.updated_at DESC)
                    FILTER (WHERE k.error_code >= 0 AND c.d > 0))[1]
        FROM (SELECT campaign_id, state, reason, smtp_code, sent_at, updated_at, 1 AS d FROM new_rows
              UNION ALL
              SELECT campaign_id, state, reason, smtp_code, sent_at, updated_at, -1 FROM old_rows) c,
             outbox_count_key(c.state, c.reason, c.smtp_code, c.sent_at) k
        GROUP BY 1, 2, 3, 4, 5
        -- Rows whose key did not change add nothing, unless they carry an error (a new reply).
        HAVING SUM(c.d) <> 0 OR MAX(k.error_code) >= 0;
    ELSE
        INSERT INTO outbox_counts
        SELECT r.campaign_id, r.state, k.suppressed, k.error_code, k.sent_hour, -COUNT(*), NULL, NULL
        FROM old_rows r, outbox_count_key(r.state, r.reason, r.smtp_code, r.sent_at) k
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
SELECT o.campaign_id, o.state, k.suppressed, k.error_code, k.sent_hour, COUNT(*),
       MAX(o.updated_at) FILTER (WHERE k.error_code >= 0),
       (array_agg(o.reason ORDER BY o.updated_at DESC) FILTER (WHERE k.error_code >= 0))[1]
FROM outbox o, outbox_count_key(o.state, o.reason, o.smtp_code, o.sent_at) k
GROUP BY 1, 2, 3, 4, 5;
