-- The revocation feed: one row per revoked session whose access tokens may still be live.
-- AUTOINCREMENT: cursors are never reused, even after old rows are purged.
CREATE TABLE revocations (
    cursor INTEGER PRIMARY KEY AUTOINCREMENT,
    sid    TEXT NOT NULL,
    exp    INTEGER NOT NULL
);
CREATE INDEX revocations_by_exp ON revocations(exp);

-- A key is published at creation but signs only from activates_at.
ALTER TABLE signing_keys ADD COLUMN activates_at INTEGER NOT NULL DEFAULT 0;
UPDATE signing_keys SET activates_at = created_at;

CREATE INDEX sessions_by_expiry ON sessions(expires_at);
