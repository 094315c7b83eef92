-- Times are Unix epoch nanoseconds (INTEGER). Secrets appear only as SHA-256 hashes (BLOB).
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    banned_at     INTEGER
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('cookie', 'token')),
    client_id     TEXT,
    scope         TEXT,
    secret_hash   BLOB UNIQUE,
    csrf_hash     BLOB,
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    hash             BLOB PRIMARY KEY,
    session_id       TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    client_id        TEXT NOT NULL,
    issued_at        INTEGER NOT NULL,
    consumed_at      INTEGER,
    successor_hash   BLOB,
    sealed_successor BLOB
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

CREATE TABLE signing_keys (
    kid         TEXT PRIMARY KEY,
    algorithm   TEXT NOT NULL,
    private_der BLOB NOT NULL,
    created_at  INTEGER NOT NULL
);
