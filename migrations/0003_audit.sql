-- The per-user audit trail behind `user-sync explain`: one row per event decision, written
-- in the transaction of the change it explains. No field values: which fields changed
-- (as bits), never a password hash.
CREATE TABLE audit_log (
    -- Orders a user's rows; no primary-key index of its own: every index costs each of the
    -- one-per-event inserts on the hot path, and nothing looks a row up by id alone.
    id           bigint GENERATED ALWAYS AS IDENTITY,
    auth_user_id uuid NOT NULL,
    event_id     text,
    event_type   text NOT NULL,
    event_ts     timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    decision     text NOT NULL,
    reason       text,
    -- Bits, in the order of `audit::FIELDS` in the code: email, first_name, last_name,
    -- password_hash, role, allowed_services, is_active, deactivation_reason.
    changed      smallint NOT NULL DEFAULT 0,
    recorded_at  timestamptz NOT NULL DEFAULT now()
);

-- `explain` reads one user's trail newest first.
CREATE INDEX audit_log_user_idx ON audit_log (auth_user_id, id DESC);
-- Pruning by age: rows arrive in time order, so a BRIN index is tiny and nearly free to
-- maintain on the hot insert path.
CREATE INDEX audit_log_recorded_brin ON audit_log USING brin (recorded_at);

-- Append-mostly: vacuuming after every fifth of new rows (the default for inserts) buys
-- only index-only scans, which nothing here uses. The pruner's deletes still trigger the
-- usual vacuum, and anti-wraparound vacuums still run.
ALTER TABLE audit_log SET (autovacuum_vacuum_insert_threshold = -1);
