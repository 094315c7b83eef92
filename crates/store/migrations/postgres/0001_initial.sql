-- The PostgreSQL schema: the same tables as the SQLite one, at its latest migration.
-- Times are Unix epoch nanoseconds (BIGINT), exact as in SQLite. Secrets appear only as SHA-256
-- hashes (BYTEA). Ids and usernames compare bytewise (COLLATE "C"), as in SQLite and in memory,
-- whatever the database's locale: user pages and session lists come out in the same order.
CREATE TABLE users (
    id            TEXT COLLATE "C" PRIMARY KEY,
    username      TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    banned_at     BIGINT
);

CREATE TABLE sessions (
    id            TEXT COLLATE "C" PRIMARY KEY,
    user_id       TEXT COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind          TEXT NOT NULL CHECK (kind IN ('cookie', 'token')),
    client_id     TEXT,
    scope         TEXT,
    secret_hash   BYTEA UNIQUE,
    csrf_hash     BYTEA,
    created_at    BIGINT NOT NULL,
    last_seen_at  BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    revoked_at    BIGINT,
    revoke_reason TEXT,
    user_agent    TEXT,
    ip            TEXT
);
CREATE INDEX sessions_by_user ON sessions(user_id);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);

CREATE TABLE refresh_tokens (
    hash             BYTEA PRIMARY KEY,
    session_id       TEXT COLLATE "C" NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    client_id        TEXT NOT NULL,
    issued_at        BIGINT NOT NULL,
    consumed_at      BIGINT,
    successor_hash   BYTEA,
    sealed_successor BYTEA
);
CREATE INDEX refresh_tokens_by_session ON refresh_tokens(session_id);

-- A key is published at creation but signs only from activates_at.
CREATE TABLE signing_keys (
    kid          TEXT COLLATE "C" PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    private_der  BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    activates_at BIGINT NOT NULL
);

-- The revocation feed: one row per revoked session whose access tokens may still be live.
CREATE TABLE revocations (
    cursor BIGINT PRIMARY KEY,
    sid    TEXT COLLATE "C" NOT NULL,
    exp    BIGINT NOT NULL
);
CREATE INDEX revocations_by_exp ON revocations(exp);

-- The last cursor handed out. Not a sequence: a revoking transaction takes this row's lock and
-- keeps it until it commits, so feed events commit (and become visible) in cursor order. With
-- a sequence, a smaller cursor could commit after a follower had already read a larger one.
-- Never decreases, so cursors are never reused, even after old events are purged.
CREATE TABLE revocation_cursor (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    last      BIGINT NOT NULL
);
INSERT INTO revocation_cursor (singleton, last) VALUES (TRUE, 0);
