-- Room on each page for the next version of its rows. Every newer event rewrites its
-- user's watermark row and, mostly, the user's row; an update whose indexed columns stay
-- the same (auth id, email, active) is HOT, touching no index, but only when the new
-- version fits on the same page. Packed full (the default, 100), the first update of
-- each row moved it to another page and added an entry to every index.
-- Applies to pages written from now on; `VACUUM FULL` rewrites existing ones.
ALTER TABLE users SET (fillfactor = 80);
ALTER TABLE user_watermarks SET (fillfactor = 80);
