-- Account managers' actions (block/unblock), kept for audit.
CREATE TABLE audit_log (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      INTEGER NOT NULL,      -- unix seconds
    actor   TEXT    NOT NULL,      -- the manager's uid
    action  TEXT    NOT NULL,      -- block | unblock
    target  TEXT    NOT NULL,      -- the account's uid
    reason  TEXT    NOT NULL
);
CREATE INDEX audit_log_target ON audit_log (target, at);
