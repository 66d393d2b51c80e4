-- One index serves both claims (due rows, and rows whose lease is over) in queue order:
-- (state, next_attempt_at, id) over the rows still in the queue. It replaces the full
-- (state, next_attempt_at) index and the (next_attempt_at, id) queue index: every claimed row
-- updated one index fewer, and every sent row two fewer (it leaves the queue, so no entry).
DROP INDEX outbox_due;
DROP INDEX outbox_queue;
CREATE INDEX outbox_queue ON outbox (state, next_attempt_at, id) WHERE state IN ('pending', 'sending');
