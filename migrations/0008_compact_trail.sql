-- The audit trail in fewer bytes: what `explain` needs of each line and nothing it can
-- derive. Each event's line is written here and only here; `audit_log` stays, read and
-- pruned beside it, because the release before writes it (and never names this table).
-- Columns go widest first, so no byte is lost to alignment padding.
CREATE TABLE audit_trail (
    -- Orders a user's lines; no primary-key index of its own, as for audit_log: every index
    -- costs each of the one-per-event inserts on the hot path, and nothing looks a line up
    -- by id alone.
    id              bigint GENERATED ALWAYS AS IDENTITY,
    -- When the worker received the event (an import: when it applied the record). Also what
    -- pruning reads: a line is written within moments of its receipt, so no second time.
    received_at     timestamptz NOT NULL,
    -- The event's own timestamp, which `explain` shows beside its decision.
    event_ts        timestamptz NOT NULL,
    auth_user_id    uuid NOT NULL,
    -- The event's id when it is a UUID in canonical form (the usual case); NULL when the
    -- event had none or when it is kept in `event_key`.
    event_id        uuid,
    -- Event type, decision and reason kind in one value (`decide::trail_code` in the code):
    --   bits 0-2   event type: 1 user.created, 2 user.updated, 3 user.deleted, 4 import,
    --              5 reconcile; 0 for any other, named in `event_type_text`
    --   bits 3-6   decision: 0 applied, 1 unchanged, 2 reactivated, 3 deactivated,
    --              4 not-for-this-service, 5 absent, 6 backfilled, 7 stale, 8 ignored,
    --              9 held, 10 retried, 11 dead-lettered
    --   bits 7-11  reason kind: 0 the words in `reason` (or none), 1 new row, 2 fields
    --              updated, 3 nothing to change, 4 active again, 5 deleted upstream,
    --              6 not in allowed services, 7 inactive upstream, 8 absent from a full
    --              export, 9 inactive, 10 deleted before this service had a row,
    --              11 backfilled, 12 stale, 13 superseded in the same batch
    -- The reason's words are derived from the kind, `about_ts` and the service's name.
    code            smallint NOT NULL,
    -- Bits, in the order of `audit::FIELDS` in the code: email, first_name, last_name,
    -- password_hash, role, allowed_services, is_active, deactivation_reason.
    changed         smallint NOT NULL,
    -- The time a reason refers to: the event the user's status stood on, for a stale or
    -- backfilled line; the event that superseded it, for a line superseded in its batch.
    -- NULL for every other line.
    about_ts        timestamptz,
    -- Rare, NULL in the usual case: an event id that is not a canonical UUID, verbatim.
    event_key       text,
    -- Rare: an event type with no code (a dead letter's type that this release has none for).
    event_type_text text,
    -- Rare: a reason that cannot be derived (a dead letter's error; the line of a row freed
    -- by `free_email`, which keeps the address it held). Never a field value otherwise.
    reason          text
);

-- `explain` reads one user's trail. On the user alone, not (user, id): a user's lines share
-- one key, which B-tree deduplication keeps as one posting list, so the index is a fraction
-- of the size and its inserts split fewer pages and write less WAL than unique (user, id)
-- keys; `explain` sorts the few lines of one user by id itself.
CREATE INDEX audit_trail_user_idx ON audit_trail (auth_user_id);
-- Pruning by age: lines arrive in time order, so a BRIN index is tiny and nearly free to
-- maintain on the hot insert path.
CREATE INDEX audit_trail_received_brin ON audit_trail USING brin (received_at);

-- Append-mostly, as audit_log: vacuuming after every fifth of new rows (the default for
-- inserts) buys only index-only scans, which nothing here uses. The pruner's deletes still
-- trigger the usual vacuum, and anti-wraparound vacuums still run.
ALTER TABLE audit_trail SET (autovacuum_vacuum_insert_threshold = -1);
