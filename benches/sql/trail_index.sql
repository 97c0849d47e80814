-- The trail's WAL per line by index shape, the inserts alone: 100 000 lines over 25 000
-- users in statements of 2 000, after a CHECKPOINT, on an empty table each. Run against a
-- Postgres server of its own (the WAL position is the server's):
--   psql -h 127.0.0.1 -p <port> -U postgres -f benches/sql/trail_index.sql
-- BENCHMARKS.md, "The trail's row", has the figures.
\set QUIET on
DROP SCHEMA IF EXISTS trail_index_bench CASCADE;
CREATE SCHEMA trail_index_bench;
SET search_path = trail_index_bench;
CREATE TABLE shape (
    id bigint GENERATED ALWAYS AS IDENTITY, received_at timestamptz NOT NULL,
    event_ts timestamptz NOT NULL, auth_user_id uuid NOT NULL, event_id uuid,
    code smallint NOT NULL, changed smallint NOT NULL, about_ts timestamptz,
    event_key text, event_type_text text, reason text
);
CREATE TABLE no_index (LIKE shape INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE TABLE user_and_id (LIKE shape INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE INDEX ON user_and_id (auth_user_id, id DESC);
CREATE TABLE user_only (LIKE shape INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE INDEX ON user_only (auth_user_id);
CREATE TABLE user_hash (LIKE shape INCLUDING DEFAULTS INCLUDING IDENTITY);
CREATE INDEX ON user_hash USING hash (auth_user_id);
CREATE TABLE people AS SELECT gen_random_uuid() AS u, n FROM generate_series(0, 24999) n;
CREATE TABLE lines AS
    SELECT p.u, g FROM generate_series(1, 100000) g
    JOIN people p ON p.n = abs(hashint4(g)) % 25000;
CREATE FUNCTION load(tbl text) RETURNS numeric LANGUAGE plpgsql AS $$
DECLARE
    start pg_lsn := pg_current_wal_insert_lsn();
BEGIN
    FOR b IN 0..49 LOOP
        EXECUTE format('INSERT INTO %I (received_at, event_ts, auth_user_id, event_id, code, changed)
                        SELECT now(), now(), u, gen_random_uuid(), 10, 3 FROM lines
                        WHERE g > $1 AND g <= $1 + 2000', tbl) USING b * 2000;
    END LOOP;
    RETURN round((pg_current_wal_insert_lsn() - start) / 100000.0, 1);
END $$;
\set QUIET off
CHECKPOINT;
SELECT 'no index' AS shape, load('no_index') AS wal_bytes_per_line;
CHECKPOINT;
SELECT '(auth_user_id, id DESC)' AS shape, load('user_and_id') AS wal_bytes_per_line;
CHECKPOINT;
SELECT '(auth_user_id)' AS shape, load('user_only') AS wal_bytes_per_line;
CHECKPOINT;
SELECT 'hash (auth_user_id)' AS shape, load('user_hash') AS wal_bytes_per_line;
SELECT c.relname AS index, round(pg_relation_size(c.oid) / 1048576.0, 2) AS mib
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'trail_index_bench' AND c.relkind = 'i' ORDER BY 1;
SELECT round(avg(pg_column_size(t.*)), 1) AS row_bytes FROM no_index t;
DROP SCHEMA trail_index_bench CASCADE;
