//! PostgreSQL backend: many Latchkey instances, one database. One pool; every multi-step write
//! is one transaction at READ COMMITTED (the server default). There, an UPDATE that had to wait
//! for a concurrent writer re-checks its WHERE clause against the row that writer committed, so
//! a conditional UPDATE (`… AND consumed_at IS NULL`) matches for exactly one of any number of
//! concurrent callers.
use crate::bounded::{Bounded, Limits};
use crate::sql::{
    SessionRow, UserRow, conflict_or_unavailable, decode_session, epoch_from_sql, epoch_to_sql,
    from_nanos, opt_from_nanos, parse_uuid, to_nanos, unavailable,
};
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoreResult,
    StoredKey, UserChange,
};
use async_trait::async_trait;
use latchkey_core::{
    AUTH_CODE_RETENTION, AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent,
    RevokeReason, SecretHash, Session, SessionId, User, UserId,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, Row};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Connections per process. Several processes share one server (default `max_connections` 100).
const MAX_CONNECTIONS: u32 = 16;
/// Waiting for a pooled connection, including connecting: past this the store is unavailable.
/// sqlx keeps retrying a refused connection until then, so this is also how long a request
/// waits before its 503 while the server is down (the Redis backend's limit is the same).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);
/// Server-side limits on every pooled connection: a statement (lock waits included) that runs
/// longer fails, so a stuck database fails requests closed instead of hanging them; a
/// transaction left idle (a stalled client) is ended so its row locks are released.
const SESSION_SETTINGS: [(&str, &str); 2] = [
    ("statement_timeout", "5s"),
    ("idle_in_transaction_session_timeout", "30s"),
];
/// Client-side deadlines, for a server that stops answering without closing its connections
/// (a stopped process, a frozen host, dropped packets): it cannot enforce `statement_timeout`,
/// and [`ACQUIRE_TIMEOUT`] covers only getting a connection. A whole store call (waiting for a
/// connection and every statement of its transaction) past `call` is `Unavailable`, a 503;
/// `call` is above the server-side statement timeout, so a slow statement still gets the
/// server's own error first. `ping` (`/readyz`) is shorter: a load balancer's probe gives up
/// after a second or two.
pub const CLIENT_LIMITS: Limits = Limits {
    call: Duration::from_secs(6),
    ping: Duration::from_secs(1),
};

/// The PostgreSQL store: [`PgStore`] with the [`CLIENT_LIMITS`] deadline on every call.
pub type PostgresStore = Bounded<PgStore>;

/// The PostgreSQL backend itself, without client-side deadlines: open it as [`PostgresStore`].
pub struct PgStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to a `postgres://` URL and migrates the database, in the schema its
    /// `search_path` names first (`public` by default).
    pub async fn connect(url: &str) -> StoreResult<Self> {
        Self::open(url, None).await
    }

    /// Like [`connect`](Self::connect), but keeps every table (the migration history included)
    /// in `schema`, created if missing: each pooled connection searches that schema alone.
    /// The name must be a plain lower-case identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes).
    pub async fn connect_with_schema(url: &str, schema: &str) -> StoreResult<Self> {
        check_schema_name(schema)?;
        Self::open(url, Some(schema)).await
    }

    async fn open(url: &str, schema: Option<&str>) -> StoreResult<Self> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?
            .application_name(&application_name(schema))
            .options(SESSION_SETTINGS);
        if let Some(schema) = schema {
            options = options.options([("search_path", schema)]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        // Migrations run on a connection of their own, taken out of the pool, without the
        // statement timeout: building an index on a large table, or waiting for another
        // instance that is migrating at the same time (the migrator's lock), may take longer.
        let mut conn = pool.acquire().await.map_err(unavailable)?.detach();
        sqlx::query("SET statement_timeout = 0")
            .execute(&mut conn)
            .await
            .map_err(unavailable)?;
        if let Some(schema) = schema {
            // The name was checked: a plain identifier, nothing to escape.
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
            )))
            .execute(&mut conn)
            .await
            .map_err(unavailable)?;
        }
        MIGRATOR
            .run(&mut conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating PostgreSQL database: {e}")))?;
        conn.close().await.map_err(unavailable)?;
        Ok(Bounded::new(PgStore { pool }, CLIENT_LIMITS))
    }
}

/// How the store's connections appear in `pg_stat_activity`.
fn application_name(schema: Option<&str>) -> String {
    match schema {
        Some(schema) => format!("latchkey/{schema}"),
        None => "latchkey".to_string(),
    }
}

fn check_schema_name(schema: &str) -> StoreResult<()> {
    let mut chars = schema.chars();
    let plain = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && schema.len() <= 63;
    if plain {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!(
            "bad PostgreSQL schema name {schema:?}: expected [a-z_][a-z0-9_]*, at most 63 bytes"
        )))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, banned_at, session_epoch) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(to_nanos(user.created_at))
        .bind(user.banned_at.map(to_nanos))
        .bind(epoch_to_sql(user.session_epoch))
        .execute(&self.pool)
        .await
        .map_err(conflict_or_unavailable("username is taken"))?;
        Ok(())
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as("SELECT * FROM users WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as("SELECT * FROM users WHERE username = $1")
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET banned_at = $1 WHERE id = $2")
            .bind(banned_at.map(to_nanos))
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        // One transaction. The UPDATE of the user row locks it until commit: a session creation
        // waits for it (its FOR SHARE) and then sees the new epoch; one that committed first is
        // seen by the revoking UPDATE below (a new statement, so a new snapshot).
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let bump = match change {
            UserChange::SessionsOnly => sqlx::query_scalar::<_, i64>(
                "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = $1 \
                 RETURNING session_epoch",
            ),
            UserChange::Password(hash) => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, password_hash = $1 \
                 WHERE id = $2 RETURNING session_epoch",
            )
            .bind(hash),
            UserChange::Ban(at) => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, banned_at = $1 \
                 WHERE id = $2 RETURNING session_epoch",
            )
            .bind(to_nanos(at)),
            UserChange::Unban => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, banned_at = NULL \
                 WHERE id = $1 RETURNING session_epoch",
            ),
        };
        let Some(epoch) = bump
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let kept = match keep {
            Some(keep) => {
                sqlx::query(
                    "UPDATE sessions SET epoch = $1 \
                     WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL AND epoch >= $1 - 1",
                )
                .bind(epoch)
                .bind(keep.to_string())
                .bind(user.to_string())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected()
                    == 1
            }
            None => false,
        };
        let mut rows: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE user_id = $3 AND revoked_at IS NULL AND epoch < $4 RETURNING id, expires_at",
        )
        .bind(to_nanos(revocation.at))
        .bind(revocation.reason.as_str())
        .bind(user.to_string())
        .bind(epoch)
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        rows.sort();
        append_feed(&mut tx, &rows, revocation).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(EpochAdvanced {
            epoch: epoch_from_sql(epoch)?,
            kept,
            revoked: rows
                .iter()
                .map(|(id, _)| parse_uuid(id).map(SessionId))
                .collect::<StoreResult<_>>()?,
        }))
    }

    async fn create_session(
        &self,
        session: &Session,
        first_refresh_token: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // FOR SHARE waits for a concurrent epoch advance (which locks the row) to commit, then
        // re-checks the condition against the row it committed. Until this transaction ends,
        // an advance waits instead, and then revokes the session created here.
        let current: Option<i32> = sqlx::query_scalar(
            "SELECT 1 FROM users WHERE id = $1 AND session_epoch = $2 AND banned_at IS NULL \
             FOR SHARE",
        )
        .bind(session.user_id.to_string())
        .bind(epoch_to_sql(session.epoch))
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        if current.is_none() {
            return Ok(CreateOutcome::UserChanged);
        }
        if let Some(parent) = session.parent_id {
            // FOR SHARE, as above: a concurrent revocation of the parent either committed
            // before (the check fails) or waits for this transaction, and its cascade then
            // sees (and revokes) the child created here.
            let parent_live: Option<i32> = sqlx::query_scalar(
                "SELECT 1 FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
                 AND expires_at > $3 FOR SHARE",
            )
            .bind(parent.to_string())
            .bind(session.user_id.to_string())
            .bind(to_nanos(session.created_at))
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if parent_live.is_none() {
                return Ok(CreateOutcome::UserChanged);
            }
        }
        sqlx::query(
            "INSERT INTO sessions (id, user_id, kind, client_id, scope, secret_hash, csrf_hash, created_at, \
             last_seen_at, expires_at, revoked_at, revoke_reason, user_agent, ip, epoch, parent_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(session.kind.as_str())
        .bind(session.client_id.as_deref())
        .bind(session.scope.as_deref())
        .bind(session.secret_hash.map(|h| h.0.to_vec()))
        .bind(session.csrf_hash.map(|h| h.0.to_vec()))
        .bind(to_nanos(session.created_at))
        .bind(to_nanos(session.last_seen_at))
        .bind(to_nanos(session.expires_at))
        .bind(session.revoked_at.map(to_nanos))
        .bind(session.revoke_reason.map(RevokeReason::as_str))
        .bind(session.user_agent.as_deref())
        .bind(session.ip.as_deref())
        .bind(epoch_to_sql(session.epoch))
        .bind(session.parent_id.map(|p| p.to_string()))
        .execute(&mut *tx)
        .await
        .map_err(conflict_or_unavailable("session exists"))?;
        if let Some(t) = first_refresh_token {
            insert_refresh_token(&mut tx, t).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(CreateOutcome::Created)
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as("SELECT * FROM sessions WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT * FROM sessions WHERE secret_hash = $1")
                .bind(hash.0.to_vec())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT * FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
             ORDER BY created_at, id",
        )
        .bind(user.to_string())
        .bind(to_nanos(now))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        // A touch that waited for a concurrent one re-checks liveness against its write.
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) \
             WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1 AND last_seen_at > $3",
        )
        .bind(to_nanos(now))
        .bind(id.to_string())
        .bind(to_nanos(idle_cutoff))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let revoked: Option<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE id = $3 AND revoked_at IS NULL RETURNING id, expires_at",
        )
        .bind(to_nanos(revocation.at))
        .bind(revocation.reason.as_str())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(row) = revoked else { return Ok(false) };
        // Its children in the same transaction (a statement of its own, so its snapshot
        // includes a child whose creation waited on the parent's row lock above).
        let children: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = $1, revoke_reason = $2 \
             WHERE parent_id = $3 AND revoked_at IS NULL RETURNING id, expires_at",
        )
        .bind(to_nanos(revocation.at))
        .bind(revocation.reason.as_str())
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut rows = vec![row];
        let mut children = children;
        children.sort();
        rows.extend(children);
        append_feed(&mut tx, &rows, revocation).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        let rows: Vec<(i64, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT cursor, sid, exp, iat_before FROM revocations WHERE cursor > $1 AND exp > $2 ORDER BY cursor LIMIT $3",
        )
        .bind(after)
        .bind(to_nanos(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.into_iter()
            .map(|(cursor, sid, exp, iat_before)| {
                Ok(RevocationEvent {
                    cursor,
                    sid: SessionId(parse_uuid(&sid)?),
                    exp: from_nanos(exp)?,
                    iat_before: opt_from_nanos(iat_before)?,
                })
            })
            .collect()
    }

    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        let row = sqlx::query(
            "SELECT t.session_id, t.client_id AS t_client_id, t.issued_at, t.consumed_at, t.sealed_successor, \
                    (succ.consumed_at IS NOT NULL) AS successor_consumed, \
                    s.id AS s_id, s.user_id AS s_user_id, s.kind AS s_kind, s.client_id AS s_client_id, \
                    s.scope AS s_scope, s.secret_hash AS s_secret_hash, s.csrf_hash AS s_csrf_hash, \
                    s.created_at AS s_created_at, s.last_seen_at AS s_last_seen_at, s.expires_at AS s_expires_at, \
                    s.revoked_at AS s_revoked_at, s.revoke_reason AS s_revoke_reason, \
                    s.user_agent AS s_user_agent, s.ip AS s_ip, s.epoch AS s_epoch, s.parent_id AS s_parent_id \
             FROM refresh_tokens t \
             JOIN sessions s ON s.id = t.session_id \
             LEFT JOIN refresh_tokens succ ON succ.hash = t.successor_hash \
             WHERE t.hash = $1",
        )
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        let Some(row) = row else { return Ok(None) };
        let session = decode_session(&row, "s_")?;
        let token = RefreshToken {
            hash: *hash,
            session_id: SessionId(parse_uuid(row.try_get("session_id").map_err(unavailable)?)?),
            client_id: row.try_get("t_client_id").map_err(unavailable)?,
            issued_at: from_nanos(row.try_get("issued_at").map_err(unavailable)?)?,
            consumed_at: opt_from_nanos(row.try_get("consumed_at").map_err(unavailable)?)?,
            sealed_successor: row.try_get("sealed_successor").map_err(unavailable)?,
            successor_consumed: row.try_get("successor_consumed").map_err(unavailable)?,
        };
        Ok(Some((token, session)))
    }

    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // The conditional UPDATE is the one-time-use guard: concurrent callers queue on the
        // row lock, and each one after the first re-checks `consumed_at IS NULL` against the
        // row the first committed, and matches nothing.
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET consumed_at = $1, successor_hash = $2, sealed_successor = $3 \
             WHERE hash = $4 AND consumed_at IS NULL AND session_id = $5 AND client_id = $6 AND EXISTS ( \
                 SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = refresh_tokens.session_id AND s.revoked_at IS NULL AND s.expires_at > $1 \
                 AND u.banned_at IS NULL AND s.epoch >= u.session_epoch)",
        )
        .bind(to_nanos(now))
        .bind(successor.hash.0.to_vec())
        .bind(sealed_successor.map(<[u8]>::to_vec))
        .bind(presented.0.to_vec())
        .bind(successor.session_id.to_string())
        .bind(&successor.client_id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if consumed.rows_affected() != 1 {
            return Ok(RotateOutcome::NotRotated);
        }
        insert_refresh_token(&mut tx, successor).await?;
        // The EXISTS above read the session without locking it, so a revocation may have
        // committed since. This UPDATE waits for any revocation in flight and re-checks the
        // session's liveness; if it has died, the whole rotation rolls back (`tx` is dropped),
        // so no successor is ever written to a family revoked before the rotation committed.
        // An epoch advance revokes every session it leaves behind in its own transaction, so
        // the same row lock orders a rotation after a ban; the user check is for the rest.
        let touched = sqlx::query(
            "UPDATE sessions SET last_seen_at = GREATEST(last_seen_at, $1) \
             WHERE id = $2 AND revoked_at IS NULL AND expires_at > $1 AND EXISTS ( \
                 SELECT 1 FROM users u WHERE u.id = sessions.user_id \
                 AND u.banned_at IS NULL AND sessions.epoch >= u.session_epoch)",
        )
        .bind(to_nanos(now))
        .bind(successor.session_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if touched.rows_affected() != 1 {
            return Ok(RotateOutcome::NotRotated);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(RotateOutcome::Rotated)
    }

    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_codes (hash, client_id, redirect_uri, code_challenge, user_id, session_id, \
             nonce, auth_time, scope, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(code.hash.0.to_vec())
        .bind(&code.client_id)
        .bind(&code.redirect_uri)
        .bind(code.code_challenge.as_deref())
        .bind(code.user_id.to_string())
        .bind(code.session_id.to_string())
        .bind(code.nonce.as_deref())
        .bind(to_nanos(code.auth_time))
        .bind(&code.scope)
        .bind(to_nanos(code.created_at))
        .bind(to_nanos(code.expires_at))
        .execute(&self.pool)
        .await
        .map_err(conflict_or_unavailable("authorization code exists"))?;
        Ok(())
    }

    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        // The conditional UPDATE is the single-use guard: concurrent callers queue on the row
        // lock and re-check `consumed_at IS NULL` against the committed row.
        let consumed = sqlx::query(
            "UPDATE auth_codes SET consumed_at = $1 \
             WHERE hash = $2 AND consumed_at IS NULL AND expires_at > $1 RETURNING *",
        )
        .bind(to_nanos(now))
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        if let Some(row) = consumed {
            return Ok(CodeOutcome::Consumed(Box::new(
                crate::sql::decode_auth_code(&row)?,
            )));
        }
        let replayed: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE auth_codes SET replayed_at = $1 \
             WHERE hash = $2 AND consumed_at IS NOT NULL RETURNING issued_session",
        )
        .bind(to_nanos(now))
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(match replayed {
            Some(issued) => CodeOutcome::Replayed {
                issued_session: issued.map(|s| parse_uuid(&s).map(SessionId)).transpose()?,
            },
            None => CodeOutcome::Invalid,
        })
    }

    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        // One statement: records the session and reports whether a replay came first.
        let replayed: Option<bool> = sqlx::query_scalar(
            "UPDATE auth_codes SET issued_session = $1 \
             WHERE hash = $2 AND consumed_at IS NOT NULL RETURNING (replayed_at IS NOT NULL)",
        )
        .bind(session.to_string())
        .bind(hash.0.to_vec())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(replayed == Some(false))
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, created_at, activates_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(to_nanos(key.created_at))
        .bind(to_nanos(key.activates_at))
        .execute(&self.pool)
        .await
        .map_err(conflict_or_unavailable("key id exists"))?;
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_der, created_at, activates_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|row| {
                Ok(StoredKey {
                    kid: row.try_get("kid").map_err(unavailable)?,
                    algorithm: row.try_get("algorithm").map_err(unavailable)?,
                    private_der: row.try_get("private_der").map_err(unavailable)?,
                    created_at: from_nanos(row.try_get("created_at").map_err(unavailable)?)?,
                    activates_at: from_nanos(row.try_get("activates_at").map_err(unavailable)?)?,
                })
            })
            .collect()
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        let done = sqlx::query("DELETE FROM signing_keys WHERE kid = $1")
            .bind(kid)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> =
            sqlx::query_as("SELECT * FROM users WHERE username > $1 ORDER BY username LIMIT $2")
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > $1",
        )
        .bind(to_nanos(now))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        // Refresh tokens go with their session (ON DELETE CASCADE). SKIP LOCKED: instances
        // purging at the same time take different rows instead of queuing on each other's.
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE id IN \
             (SELECT id FROM sessions WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(to_nanos(now))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let budget = i64::from(limit).saturating_sub(i64::try_from(sessions).unwrap_or(i64::MAX));
        let codes = sqlx::query(
            "DELETE FROM auth_codes WHERE hash IN \
             (SELECT hash FROM auth_codes WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(to_nanos(now - AUTH_CODE_RETENTION))
        .bind(budget)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let budget = budget.saturating_sub(i64::try_from(codes).unwrap_or(i64::MAX));
        let events = sqlx::query(
            "DELETE FROM revocations WHERE cursor IN \
             (SELECT cursor FROM revocations WHERE exp <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(to_nanos(now))
        .bind(budget)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        tx.commit().await.map_err(unavailable)?;
        Ok(sessions + codes + events)
    }
    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<crate::UserRoles>> {
        let row: Option<(String, Option<i64>)> =
            sqlx::query_as("SELECT roles, roles_removed_at FROM users WHERE id = $1")
                .bind(user.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.map(|(roles, removed_at)| {
            Ok(crate::UserRoles {
                roles: crate::decode_roles(&roles)?,
                removed_at: opt_from_nanos(removed_at)?,
            })
        })
        .transpose()
    }

    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<crate::RolesChanged>> {
        // One transaction: the roles, the removal instant and the feed entries commit together.
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        let previous: Option<String> =
            sqlx::query_scalar("SELECT roles FROM users WHERE id = $1 FOR UPDATE")
                .bind(user.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?;
        let Some(previous) = previous else {
            return Ok(None);
        };
        let previous = crate::decode_roles(&previous)?;
        let removed = latchkey_core::removes_any(&previous, roles);
        sqlx::query(
            "UPDATE users SET roles = $1, roles_removed_at = CASE WHEN $2 THEN $3 ELSE roles_removed_at END WHERE id = $4",
        )
        .bind(crate::encode_roles(roles))
        .bind(removed)
        .bind(to_nanos(at))
        .bind(user.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut stale = Vec::new();
        if removed {
            let sessions: Vec<(String, i64)> = sqlx::query_as(
                "SELECT id, expires_at FROM sessions WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY id",
            )
            .bind(user.to_string())
            .bind(to_nanos(at))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            append_stale(&mut tx, &sessions, at, access_ttl).await?;
            stale = sessions
                .iter()
                .map(|(id, _)| parse_uuid(id).map(SessionId))
                .collect::<StoreResult<Vec<_>>>()?;
            stale.sort();
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(crate::RolesChanged {
            previous,
            roles: roles.to_vec(),
            stale,
        }))
    }
}

/// Appends a feed event per revoked `(sid, session expires_at)` whose tokens may be live.
///
/// The cursors come from the one-row `revocation_cursor` table, whose row lock this
/// transaction then holds until it commits: feed appends are serialised, and PostgreSQL makes a
/// commit visible before it releases the locks, so a follower that has read cursor `n` can
/// never later find a smaller one. Call it last in the transaction, to hold the lock briefly.
async fn append_feed(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    revoked: &[(String, i64)],
    revocation: &Revocation,
) -> StoreResult<()> {
    let mut sids = Vec::with_capacity(revoked.len());
    let mut exps = Vec::with_capacity(revoked.len());
    for (sid, expires_at) in revoked {
        let exp = revocation.feed_expiry(from_nanos(*expires_at)?);
        if exp > revocation.at {
            sids.push(sid.clone());
            exps.push(to_nanos(exp));
        }
    }
    if sids.is_empty() {
        return Ok(());
    }
    let count = i64::try_from(sids.len()).unwrap_or(i64::MAX);
    let last: i64 =
        sqlx::query_scalar("UPDATE revocation_cursor SET last = last + $1 RETURNING last")
            .bind(count)
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
    sqlx::query(
        "INSERT INTO revocations (cursor, sid, exp) \
         SELECT $1 + e.n, e.sid, e.exp FROM UNNEST($2::text[], $3::bigint[]) WITH ORDINALITY AS e(sid, exp, n)",
    )
    .bind(last - count)
    .bind(sids)
    .bind(exps)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

async fn insert_refresh_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    t: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, client_id, issued_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(t.hash.0.to_vec())
    .bind(t.session_id.to_string())
    .bind(&t.client_id)
    .bind(to_nanos(t.issued_at))
    .execute(&mut **tx)
    .await
    .map_err(conflict_or_unavailable("refresh token exists"))?;
    Ok(())
}

/// A throwaway schema for one test: [`TestSchema::create`] opens a store in a new schema with a
/// random name (so concurrent tests and test runs never meet), and dropping the guard drops
/// the schema with everything in it.
#[cfg(feature = "conformance")]
pub struct TestSchema {
    url: String,
    schema: String,
}

#[cfg(feature = "conformance")]
impl TestSchema {
    pub async fn create(url: &str) -> StoreResult<(PostgresStore, Self)> {
        // The guard exists before the schema does: if migrating fails half-way, dropping the
        // guard still removes what was made.
        let guard = Self {
            url: url.to_string(),
            schema: format!("latchkey_test_{}", uuid::Uuid::new_v4().simple()),
        };
        let store = PostgresStore::connect_with_schema(url, &guard.schema).await?;
        Ok((store, guard))
    }

    pub fn name(&self) -> &str {
        &self.schema
    }

    /// Drops the schema over a connection of its own, within half a minute.
    fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
        let cleanup = async {
            let options = PgConnectOptions::from_str(url)?
                .application_name("latchkey/test-cleanup")
                .options([("lock_timeout", "10s")]);
            let mut conn = sqlx::PgConnection::connect_with(&options).await?;
            // Ends the connections the test's pool may still hold (a test that panicked can
            // leave tasks behind in open transactions), so the DROP never waits on their locks.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND application_name = $1 \
                 AND pid <> pg_backend_pid()",
            )
            .bind(application_name(Some(schema)))
            .execute(&mut conn)
            .await?;
            // The name is ours (checked when the store was opened): nothing to escape.
            sqlx::query(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        // The timer must be made inside the runtime.
        let bounded = async { tokio::time::timeout(Duration::from_secs(30), cleanup).await };
        match runtime.block_on(bounded) {
            Ok(done) => done.map_err(|e| e.to_string()),
            Err(_) => Err("timed out".to_string()),
        }
    }
}

#[cfg(feature = "conformance")]
impl Drop for TestSchema {
    fn drop(&mut self) {
        // On a thread of its own with its own runtime: the test's runtime may be busy, shutting
        // down or unwinding from a panic, and must not be blocked on from inside.
        let (url, schema) = (self.url.clone(), self.schema.clone());
        match std::thread::spawn(move || Self::drop_schema(&url, &schema)).join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("warning: could not drop test schema {}: {e}", self.schema),
            Err(_) => eprintln!(
                "warning: could not drop test schema {}: cleanup panicked",
                self.schema
            ),
        }
    }
}

/// Appends a "stale before" feed entry (docs/decisions/0011) per `(sid, session expires_at)`,
/// with cursors taken as in `append_feed`. Call it last in the transaction.
async fn append_stale(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    sessions: &[(String, i64)],
    at: OffsetDateTime,
    access_ttl: time::Duration,
) -> StoreResult<()> {
    if sessions.is_empty() {
        return Ok(());
    }
    let sids: Vec<String> = sessions.iter().map(|(sid, _)| sid.clone()).collect();
    let exps = sessions
        .iter()
        .map(|(_, expires_at)| Ok(to_nanos((at + access_ttl).min(from_nanos(*expires_at)?))))
        .collect::<StoreResult<Vec<i64>>>()?;
    let count = i64::try_from(sids.len()).unwrap_or(i64::MAX);
    let last: i64 =
        sqlx::query_scalar("UPDATE revocation_cursor SET last = last + $1 RETURNING last")
            .bind(count)
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
    sqlx::query(
        "INSERT INTO revocations (cursor, sid, exp, iat_before) \
         SELECT $1 + e.n, e.sid, e.exp, $4 FROM UNNEST($2::text[], $3::bigint[]) WITH ORDINALITY AS e(sid, exp, n)",
    )
    .bind(last - count)
    .bind(sids)
    .bind(exps)
    .bind(to_nanos(latchkey_core::stale_before(at)))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}
