-- The mass-deactivation brake's log: when it engaged (and at which threshold) and when an
-- operator released it. Every replica reads it, so `user-sync brake release` reaches all.
CREATE TABLE brake_log (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    action    text NOT NULL CHECK (action IN ('engaged', 'released')),
    threshold bigint,
    detail    text,
    at        timestamptz NOT NULL DEFAULT now()
);
