-- Roles (docs/decisions/0011): the user's role names joined by ',' (sorted), and when one was
-- last removed. A feed entry with iat_before (epoch nanoseconds of a whole second) makes only
-- the session's tokens issued before it stale; without it, every token of the session is revoked.
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
ALTER TABLE users ADD COLUMN roles_removed_at INTEGER;
ALTER TABLE revocations ADD COLUMN iat_before INTEGER;
