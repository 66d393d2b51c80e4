-- The outbox's state check as a chain of comparisons rather than an `IN` list: SQLite builds
-- an `IN` list's lookup table anew for every row it checks, which cost more than each row's
-- own write (1.7 s of a 5 s insert of 840,000 rows: docs/benchmarks.md). Same rule, so every
-- row already there satisfies it. The counts' triggers are written the same way, for the same
-- reason.
--
-- SQLite cannot alter a check. Its manual gives two ways (sqlite.org/lang_altertable.html,
-- "Making other kinds of table schema changes"): rebuild the table with foreign keys off, which
-- a migration cannot do (it runs inside a transaction, where they cannot be turned off, and
-- dropping the outbox would then break the rows that refer to it), or, for a changed check,
-- edit the table's definition in the schema, as here. It takes no time whatever the outbox's
-- size. The trigger statements below move the schema's version on, so that every connection
-- reads the new definition; `RESET` makes this one read it again too.
PRAGMA writable_schema = ON;
UPDATE sqlite_master
SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''sending'', ''sent'', ''skipped'', ''failed'', ''expired''))',
    'CHECK (state = ''pending'' OR state = ''sending'' OR state = ''sent'' OR state = ''skipped'' OR state = ''failed'' OR state = ''expired'')')
WHERE type = 'table' AND name = 'outbox';
PRAGMA writable_schema = OFF;

DROP TRIGGER outbox_counts_insert;
DROP TRIGGER outbox_counts_update;
DROP TRIGGER outbox_counts_delete;

CREATE TRIGGER outbox_counts_insert AFTER INSERT ON outbox BEGIN
    INSERT INTO outbox_counts VALUES (NEW.campaign_id, NEW.state,
        CASE WHEN NEW.state = 'skipped' AND NEW.reason = 'suppressed' THEN 1 ELSE 0 END,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL
             THEN COALESCE(NEW.smtp_code, 0) ELSE -1 END,
        CASE WHEN NEW.state = 'sent' THEN COALESCE(NEW.sent_at, 0) / 3600 ELSE -1 END,
        1,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL THEN NEW.updated_at END,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL THEN NEW.reason END)
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
      AND error_code = CASE WHEN (OLD.state = 'pending' OR OLD.state = 'failed') AND OLD.reason IS NOT NULL
                            THEN COALESCE(OLD.smtp_code, 0) ELSE -1 END
      AND sent_hour = CASE WHEN OLD.state = 'sent' THEN COALESCE(OLD.sent_at, 0) / 3600 ELSE -1 END;
    INSERT INTO outbox_counts VALUES (NEW.campaign_id, NEW.state,
        CASE WHEN NEW.state = 'skipped' AND NEW.reason = 'suppressed' THEN 1 ELSE 0 END,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL
             THEN COALESCE(NEW.smtp_code, 0) ELSE -1 END,
        CASE WHEN NEW.state = 'sent' THEN COALESCE(NEW.sent_at, 0) / 3600 ELSE -1 END,
        1,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL THEN NEW.updated_at END,
        CASE WHEN (NEW.state = 'pending' OR NEW.state = 'failed') AND NEW.reason IS NOT NULL THEN NEW.reason END)
    ON CONFLICT (campaign_id, state, suppressed, error_code, sent_hour) DO UPDATE SET n = n + 1,
        last_reason = CASE WHEN excluded.last_at >= COALESCE(last_at, 0) THEN excluded.last_reason ELSE last_reason END,
        last_at = MAX(COALESCE(last_at, 0), COALESCE(excluded.last_at, 0));
END;

CREATE TRIGGER outbox_counts_delete AFTER DELETE ON outbox BEGIN
    UPDATE outbox_counts SET n = n - 1
    WHERE campaign_id = OLD.campaign_id AND state = OLD.state
      AND suppressed = CASE WHEN OLD.state = 'skipped' AND OLD.reason = 'suppressed' THEN 1 ELSE 0 END
      AND error_code = CASE WHEN (OLD.state = 'pending' OR OLD.state = 'failed') AND OLD.reason IS NOT NULL
                            THEN COALESCE(OLD.smtp_code, 0) ELSE -1 END
      AND sent_hour = CASE WHEN OLD.state = 'sent' THEN COALESCE(OLD.sent_at, 0) / 3600 ELSE -1 END;
END;

PRAGMA writable_schema = RESET;
