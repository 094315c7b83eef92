-- The user's session epoch (DESIGN invariant 7, docs/decisions/0008): advanced in the same
-- transaction by every ban, unban, password change and "revoke all". A session records the
-- epoch its login read before verifying the password; it is created only if that is still the
-- user's epoch, and refreshed or accepted only while it is.
ALTER TABLE users ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0;
