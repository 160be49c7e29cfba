-- Account managers' actions (block/unblock), kept for audit.
CREATE TABLE audit_log (
    id      BIGINT        NOT NULL AUTO_INCREMENT PRIMARY KEY,
    at      BIGINT        NOT NULL,
    actor   VARCHAR(64)   NOT NULL,
    action  VARCHAR(16)   NOT NULL,
    target  VARCHAR(64)   NOT NULL,
    reason  VARCHAR(1024) NOT NULL,
    KEY audit_log_target (target, at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
