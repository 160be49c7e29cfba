-- Personal API tokens (only their SHA-256 is stored).
CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    uid         TEXT    NOT NULL,
    name        TEXT    NOT NULL,
    token_hash  TEXT    NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    last_used   INTEGER
);
CREATE INDEX api_tokens_uid ON api_tokens (uid);
