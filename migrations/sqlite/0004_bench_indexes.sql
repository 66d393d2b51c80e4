-- Only claimed rows (a batch at a time) have a claim token: index those alone. The full index
-- held one entry per outbox row and cost every planned row an insert (a tenth of planning
-- time at a million rows). Lookups by token (`claim_token = ...`) imply IS NOT NULL, so they
-- still use it.
DROP INDEX outbox_claim;
CREATE INDEX outbox_claim ON outbox (claim_token) WHERE claim_token IS NOT NULL;
