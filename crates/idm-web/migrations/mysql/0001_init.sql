-- idm-web schema (MariaDB/MySQL). Keep in step with migrations/sqlite.

CREATE TABLE signups (
    id                  BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username            VARCHAR(255) NOT NULL,
    username_key        VARCHAR(255) NOT NULL,
    uid                 VARCHAR(32)  NOT NULL,
    email               VARCHAR(255) NOT NULL,
    password_hash       VARCHAR(512) NULL,
    state               VARCHAR(16)  NOT NULL,
    token_nonce         VARCHAR(64)  NOT NULL,
    uid_number          BIGINT       NULL,
    created_at          BIGINT       NOT NULL,
    confirmed_at        BIGINT       NULL,
    account_created_at  BIGINT       NULL,
    admins_notified_at  BIGINT       NULL,
    UNIQUE KEY signups_username_key (username_key),
    UNIQUE KEY signups_uid (uid),
    KEY signups_state_created (state, created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE username_blocklist (
    id              CHAR(64)     NOT NULL PRIMARY KEY,
    origin          VARCHAR(64)  NOT NULL,
    pattern         TEXT         NOT NULL,
    options         VARCHAR(1024) NOT NULL,
    case_sensitive  BIGINT       NOT NULL,
    first_seen      BIGINT       NOT NULL,
    last_seen       BIGINT       NOT NULL,
    KEY username_blocklist_origin (origin, last_seen)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE sessions (
    id          VARCHAR(64)  NOT NULL PRIMARY KEY,
    data        MEDIUMBLOB   NOT NULL,
    expiry_date BIGINT       NOT NULL,
    KEY sessions_expiry (expiry_date)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
