-- Per account, how many e-mail changes went through. An e-mail-change link is
-- signed over the generation current when it was made, and confirming it moves
-- the generation on (compare-and-set): a link works once, and every older link
-- of the account dies with it, even if the address later returns to the one
-- the link was made for.
CREATE TABLE email_link_generations (
    uid         VARCHAR(64) NOT NULL PRIMARY KEY,
    generation  BIGINT      NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
