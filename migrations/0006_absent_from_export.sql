-- `import --full` deactivates the users a full export leaves out, with a reason of its own.
ALTER TABLE users DROP CONSTRAINT IF EXISTS users_deactivation_reason_check;
ALTER TABLE users ADD CONSTRAINT users_deactivation_reason_check CHECK (deactivation_reason IN
    ('deleted', 'access_revoked', 'inactive_upstream', 'absent_from_export'));
