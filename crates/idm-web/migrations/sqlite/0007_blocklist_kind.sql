-- Which list a synced line belongs to: 'block' (a wiki's title blacklist
-- pages) or 'allow' (its title whitelist pages, which let a blacklisted name
-- through). Every line stored before this migration came from a blacklist.
ALTER TABLE username_blocklist ADD COLUMN kind TEXT NOT NULL DEFAULT 'block';
