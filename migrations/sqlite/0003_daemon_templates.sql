-- The template version each daemon is sending with, for `avvisi status`.
ALTER TABLE daemons ADD COLUMN templates_digest TEXT;
