-- The browser console's sessions and its login throttle. Keep in step with
-- ../postgres/0016_sessions.sql. Both tables live in the database, not in a daemon's memory, so
-- that several daemons behind one proxy share them and a restart forgets nothing.

-- A signed-in browser. The cookie holds a random token; only its SHA-256 is stored, so a copy of
-- the database does not sign anyone in. `csrf` is the token every form of the session carries.
CREATE TABLE sessions (
    token_sha256 TEXT PRIMARY KEY,
    account      TEXT NOT NULL,
    csrf         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- One row per wrong password: the throttle counts them per account and per client address over
-- the last 15 minutes. Never a password.
CREATE TABLE login_failures (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,
    account TEXT NOT NULL,
    address TEXT NOT NULL
);
CREATE INDEX login_failures_account ON login_failures (account, at);
CREATE INDEX login_failures_address ON login_failures (address, at);
