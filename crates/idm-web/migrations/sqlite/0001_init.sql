-- idm-web schema (SQLite). Keep in step with migrations/mysql.

-- Signups: one row per signup, from the form until (and after) the account exists.
CREATE TABLE signups (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    username            TEXT    NOT NULL,          -- display name: cn/sn
    username_key        TEXT    NOT NULL UNIQUE,   -- lower-cased username, for uniqueness
    uid                 TEXT    NOT NULL UNIQUE,   -- shell name
    email               TEXT    NOT NULL,
    password_hash       TEXT,                      -- directory hash; NULL once the account exists
    state               TEXT    NOT NULL,          -- pending | confirmed | created
    token_nonce         TEXT    NOT NULL,          -- rotated to invalidate activation links
    uid_number          INTEGER,                   -- allocated once, reused by retries
    created_at          INTEGER NOT NULL,          -- unix seconds
    confirmed_at        INTEGER,
    account_created_at  INTEGER,
    admins_notified_at  INTEGER
);
CREATE INDEX signups_state_created ON signups (state, created_at);

-- The username blocklist, synced from wiki pages.
CREATE TABLE username_blocklist (
    id              TEXT    PRIMARY KEY,           -- sha256(origin, line) in hex
    origin          TEXT    NOT NULL,              -- the configured source name
    pattern         TEXT    NOT NULL,              -- the regex
    options         TEXT    NOT NULL,              -- the <…> options, '|'-separated
    case_sensitive  INTEGER NOT NULL,
    first_seen      INTEGER NOT NULL,
    last_seen       INTEGER NOT NULL
);
CREATE INDEX username_blocklist_origin ON username_blocklist (origin, last_seen);

-- Web sessions (tower-sessions records, JSON-encoded).
CREATE TABLE sessions (
    id          TEXT    PRIMARY KEY,
    data        BLOB    NOT NULL,
    expiry_date INTEGER NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expiry_date);
