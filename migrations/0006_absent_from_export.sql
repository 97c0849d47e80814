-- `import --full` deactivates the users a full export leaves out, with a reason of its own.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_deactivation_reason_check;
ALTER TABLE users ADD CONSTRAINT users_deactivation_reason_check CHECK (deactivation_reason IN
    ('deleted', 'access_revoked', 'inactive_upstream', 'absent_from_export'));

-- The status a guarded update replaced, beside `prev_active`: a deactivation of a user
-- already inactive for the same reason changes nothing, and says so (`unchanged`).
ALTER TABLE user_watermarks ADD COLUMN prev_reason text;
