-- The relay fault that stopped each daemon's delivery, since when (NULL while the relay accepts
-- messages): `avvisi status` and `explain` name it, in another process than the daemon's.
ALTER TABLE daemons ADD COLUMN relay_fault TEXT;
ALTER TABLE daemons ADD COLUMN relay_fault_since BIGINT;
