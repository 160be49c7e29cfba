-- A small migration for the test-support tests: valid for both SQLite and MariaDB.
CREATE TABLE signups (
    id INTEGER PRIMARY KEY,
    username VARCHAR(64) NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
