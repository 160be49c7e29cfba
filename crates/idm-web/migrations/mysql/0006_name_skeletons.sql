-- Confusable skeletons of every name a signup holds (username and shell name;
-- see names::skeleton), so two names that look alike can't both be taken.
-- Keyed by SHA-256 of the skeleton (hex): fixed width, any length of name.
CREATE TABLE name_skeletons (
    skeleton_hash CHAR(64)     NOT NULL PRIMARY KEY,
    signup_id     BIGINT       NOT NULL,
    KEY name_skeletons_signup (signup_id),
    CONSTRAINT name_skeletons_signup_fk FOREIGN KEY (signup_id) REFERENCES signups (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
