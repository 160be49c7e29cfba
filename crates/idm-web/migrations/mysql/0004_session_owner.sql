-- The account a session is logged in as, so that blocking the account or
-- changing its password ends its sessions at once. Existing sessions get it
-- from their record (sessions survive the upgrade).
ALTER TABLE sessions ADD COLUMN uid VARCHAR(64) NULL, ADD KEY sessions_uid (uid);
UPDATE sessions SET uid = JSON_UNQUOTE(JSON_EXTRACT(CONVERT(data USING utf8mb4), '$.user.uid'))
    WHERE JSON_VALID(CONVERT(data USING utf8mb4));
