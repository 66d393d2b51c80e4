-- Daemons, planner ticks and the maintenance phases (PostgreSQL). Keep in step with ../sqlite.

-- Running daemons and their last heartbeat (SQLite allows one at a time; see daemon.rs).
CREATE TABLE daemons (
    id           TEXT PRIMARY KEY,
    started_at   BIGINT NOT NULL,
    heartbeat_at BIGINT NOT NULL
);

-- One row per planner tick: the daemon that inserts it plans, the others skip that tick.
CREATE TABLE planner_ticks (
    tick_at    BIGINT PRIMARY KEY,
    daemon     TEXT NOT NULL
);

-- Phase events declared once: 'lapsed_recorded' (at maintenance start), 'reopened'.
CREATE TABLE service_events (
    name        TEXT PRIMARY KEY,
    at          BIGINT NOT NULL,
    declared_at BIGINT NOT NULL
);

-- Who still had a procedure pending at the deadline; decides the specific reopening notices.
CREATE TABLE lapsed (
    user_id     TEXT NOT NULL,
    procedure   TEXT NOT NULL CHECK (procedure IN ('registration', 'email_validation', 'code_regeneration')),
    recorded_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, procedure)
);
