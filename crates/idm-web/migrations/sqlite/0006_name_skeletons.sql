-- Confusable skeletons of every name a signup holds (username and shell name;
-- see names::skeleton), so two names that look alike can't both be taken.
-- Keyed by SHA-256 of the skeleton (hex): fixed width, any length of name.
CREATE TABLE name_skeletons (
    skeleton_hash TEXT    NOT NULL PRIMARY KEY,
    signup_id     INTEGER NOT NULL REFERENCES signups (id) ON DELETE CASCADE
);
CREATE INDEX name_skeletons_signup ON name_skeletons (signup_id);
