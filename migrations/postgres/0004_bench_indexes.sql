-- Only claimed rows (a batch at a time) have a claim token: index those alone. The full index
-- held one entry per outbox row and cost every planned row an insert (a tenth of planning
-- time at a million rows). Lookups by token (`claim_token = ...`) imply IS NOT NULL, so they
-- still use it.
DROP INDEX outbox_claim;
CREATE INDEX outbox_claim ON outbox (claim_token) WHERE claim_token IS NOT NULL;

-- The claim query (`outbox::claim`) takes the oldest due rows, pending or with an expired lease,
-- ordered by (next_attempt_at, id). Without an index in that order PostgreSQL sorts the whole
-- queue for every batch (0.7 s per batch of 200 at 1.2 million rows); this one lets it read
-- the first rows and stop (0.3 ms). SQLite cannot use it for that query (it does not prove an
-- OR of states implies the index's condition), so it is PostgreSQL's only.
CREATE INDEX outbox_queue ON outbox (next_attempt_at, id) WHERE state IN ('pending', 'sending');
