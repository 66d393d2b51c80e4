-- A one-off campaign narrowed to an uploaded list of users (issue 23). Keep in step with
-- ../sqlite/0020_campaign_lists.sql. The campaign's filter_province then holds the list's key,
-- '#' and the campaign's uid, so that every query that narrows by province narrows by the list
-- with the same one parameter (audience::Audience::condition_in). Only the users found are
-- kept, by user id; the approval's audience hash is of the users the list leaves.
CREATE TABLE campaign_lists (
    list_key TEXT NOT NULL,
    user_id  TEXT NOT NULL,
    PRIMARY KEY (list_key, user_id)
);
