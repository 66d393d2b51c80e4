-- The outbox is read by user only by `avvisi explain`, which now looks the user up through the
-- unique (campaign_id, user_id, step) key, one probe per campaign. The separate user index cost
-- every planned row an insert and, on PostgreSQL, every claimed and sent row one more (about a
-- tenth of planning time at a million rows).
DROP INDEX outbox_user;
