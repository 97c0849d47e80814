-- A release's token: `user-sync brake release` stamps each deactivation it moves back with
-- it, and a worker admits a stamped deactivation past the brake only when the token names
-- a release recorded here (a producer cannot forge one that is).
ALTER TABLE brake_log ADD COLUMN token text UNIQUE;
