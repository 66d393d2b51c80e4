-- Streams and opt-outs (sqlite). Keep in step with ../postgres/0015_streams.sql.

-- Each campaign's stream (src/store/stream.rs): what its emails' List-Id and Feedback-ID name,
-- and what an opt-out stops. Decided when the campaign is created; the existing ones as the
-- calendar and the operators made them.
ALTER TABLE campaigns ADD COLUMN stream TEXT NOT NULL DEFAULT '';
UPDATE campaigns SET stream = CASE
    WHEN kind = 'reminder' THEN 'reminders'
    WHEN kind = 'reopening' AND template = 'reopening_general' THEN 'reopening_general'
    WHEN kind = 'reopening' THEN 'reopening_procedures'
    WHEN kind = 'oneoff' AND digest = 1 THEN 'maintenance_notice'
    ELSE 'campaign:' || name END;
-- A one-off campaign created with `--transactional REASON`: about the user's own business, so
-- its emails carry no unsubscribe. NULL: not transactional.
ALTER TABLE campaigns ADD COLUMN transactional TEXT;

-- Who asked, for which stream, to get no more of it: the one-click unsubscribe (source 'link'),
-- an operator ('operator'), a complaint ('complaint'). The planner plans nothing of that stream
-- for the user, and a message already planned is skipped when it is claimed.
CREATE TABLE optouts (
    user_id TEXT NOT NULL,
    stream  TEXT NOT NULL,
    at      INTEGER NOT NULL,
    source  TEXT NOT NULL CHECK (source IN ('link', 'operator', 'complaint')),
    PRIMARY KEY (user_id, stream)
);
