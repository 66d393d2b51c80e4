-- The daily digest: everything due for one person on one local day goes out as one email. The
-- outbox stays one row per (campaign, user, step); the rows merged into one email point to its
-- lead row and carry the lead's Message-ID. The lead points to itself, a row sent alone has
-- NULL. Only leads and rows sent alone are claimed; the rest travel with their lead.
ALTER TABLE outbox ADD COLUMN digest_of BIGINT;
CREATE INDEX outbox_digest ON outbox (digest_of) WHERE digest_of IS NOT NULL;

-- Whether a campaign's messages merge into the daily digest: the calendar's campaigns (the
-- reminders, the maintenance notice, the reopening notices) do; an operator's one-off campaign
-- does not, it is an email of its own.
ALTER TABLE campaigns ADD COLUMN digest BIGINT NOT NULL DEFAULT 1 CHECK (digest IN (0, 1));
UPDATE campaigns SET digest = 0 WHERE kind = 'oneoff';
