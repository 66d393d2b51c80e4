-- An account whose password someone else set (an administrator's `users add`, the console's
-- new account, a reset of another's password): 1 until its owner sets their own, at the first
-- login (the console shows nothing else) or with `users passwd` as themself. Keep in step with
-- ../sqlite/0026_account_must_change_password.sql.
ALTER TABLE accounts ADD COLUMN must_change_password BIGINT NOT NULL DEFAULT 0;
