-- The mass-deactivation brake's window, shared by every replica on the queue: each row is
-- the deactivations one batch was admitted to apply, so the threshold means the same with
-- one replica or ten. Old rows are deleted as admissions read the window.
CREATE TABLE brake_window (
    at timestamptz NOT NULL DEFAULT now(),
    n  integer NOT NULL CHECK (n > 0)
);
CREATE INDEX brake_window_at_idx ON brake_window (at);
