-- Standard login (docs/decisions/0010): a token session issued through /oauth/authorize is a
-- child of the cookie session that approved it; ending the parent ends its children.
ALTER TABLE sessions ADD COLUMN parent_id TEXT;
CREATE INDEX sessions_by_parent ON sessions(parent_id) WHERE parent_id IS NOT NULL;

-- Authorization codes: only the SHA-256 of the code is stored. Consumed once by a conditional
-- UPDATE; a replay sets replayed_at so the session of the first use can be revoked.
CREATE TABLE auth_codes (
    hash            BLOB PRIMARY KEY,
    client_id       TEXT NOT NULL,
    redirect_uri    TEXT NOT NULL,
    code_challenge  TEXT,
    user_id         TEXT NOT NULL,
    session_id      TEXT NOT NULL,
    nonce           TEXT,
    auth_time       INTEGER NOT NULL,
    scope           TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    consumed_at     INTEGER,
    replayed_at     INTEGER,
    issued_session  TEXT
);
CREATE INDEX auth_codes_by_expiry ON auth_codes(expires_at);
