-- What the reopening notice needs, as it was at the lapse: a later snapshot may no longer list
-- the user (the portal cancels incomplete registrations at the maintenance), and the notice
-- about what happened to them must still reach them.
ALTER TABLE lapsed ADD COLUMN email TEXT;
ALTER TABLE lapsed ADD COLUMN first_name TEXT;
ALTER TABLE lapsed ADD COLUMN last_name TEXT;
