-- An account's own email address: where the console sends the operator's test messages (never
-- an address typed in a form). NULL until an administrator sets it. Keep in step with
-- ../sqlite/0023_account_address.sql.
ALTER TABLE accounts ADD COLUMN address TEXT;
