-- Personal API tokens (only their SHA-256 is stored).
CREATE TABLE api_tokens (
    id          BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    uid         VARCHAR(64)  NOT NULL,
    name        VARCHAR(255) NOT NULL,
    token_hash  CHAR(64)     NOT NULL,
    created_at  BIGINT       NOT NULL,
    last_used   BIGINT       NULL,
    UNIQUE KEY api_tokens_hash (token_hash),
    KEY api_tokens_uid (uid)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
