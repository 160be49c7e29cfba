-- The account a session is logged in as, so that blocking the account or
-- changing its password ends its sessions at once. Existing sessions get it
-- from their record (sessions survive the upgrade).
ALTER TABLE sessions ADD COLUMN uid TEXT;
CREATE INDEX sessions_uid ON sessions (uid);
UPDATE sessions SET uid = json_extract(CAST(data AS TEXT), '$.user.uid')
    WHERE json_valid(CAST(data AS TEXT));
