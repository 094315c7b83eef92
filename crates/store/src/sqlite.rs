//! SQLite backend: the embedded default. WAL mode; one writer connection (SQLite allows one
//! writer at a time anyway, so queuing in the pool beats retrying on SQLITE_BUSY) and a pool
//! of readers.
use crate::sql::{
    SessionRow, UserRow, conflict_or_unavailable, decode_session, epoch_to_sql, from_nanos,
    opt_from_nanos, parse_uuid, to_nanos, unavailable,
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
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;
use std::time::Duration;
use time::OffsetDateTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database at a `sqlite://path` URL and migrates it.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("bad SQLite URL: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS
            // crash or power loss can lose the last transactions.
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        // Processes started together on a fresh file race to create it, switch it to WAL and
        // migrate it. SQLite serialises their writes (busy timeout), and each migration is
        // one transaction, so the loser of a race fails cleanly ("table already exists",
        // a busy snapshot) and, tried again, finds the work done: a failed attempt is
        // retried before it counts.
        let mut attempt = 1;
        let writer = loop {
            match Self::open_writer(&options).await {
                Ok(writer) => break writer,
                Err(e) if attempt < OPEN_ATTEMPTS => {
                    tracing::debug!(attempt, error = %e, "opening the SQLite database; retrying");
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        let readers = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.read_only(true))
            .await
            .map_err(unavailable)?;
        Ok(Self { writer, readers })
    }

    /// The writer pool, connected and with every migration applied.
    async fn open_writer(options: &SqliteConnectOptions) -> StoreResult<SqlitePool> {
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        if let Err(e) = MIGRATOR.run(&writer).await {
            writer.close().await;
            return Err(StoreError::Unavailable(format!(
                "migrating SQLite database: {e}"
            )));
        }
        Ok(writer)
    }
}

/// Attempts at opening and migrating the database before its error counts (see `connect`).
const OPEN_ATTEMPTS: u32 = 5;

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, username, password_hash, created_at, banned_at, session_epoch) \
             VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(&user.password_hash)
        .bind(to_nanos(user.created_at))
        .bind(user.banned_at.map(to_nanos))
        .bind(epoch_to_sql(user.session_epoch))
        .execute(&self.writer)
        .await
        .map_err(conflict_or_unavailable("username is taken"))?;
        Ok(())
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as("SELECT * FROM users WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        let row: Option<UserRow> = sqlx::query_as("SELECT * FROM users WHERE username = ?")
            .bind(username)
            .fetch_optional(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET banned_at = ? WHERE id = ?")
            .bind(banned_at.map(to_nanos))
            .bind(id.to_string())
            .execute(&self.writer)
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
        // One transaction on the single writer: the user's change, the new epoch, the
        // re-stamped survivor and the revocations (with their feed events) commit together.
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        let bump = match change {
            UserChange::SessionsOnly => sqlx::query_scalar::<_, i64>(
                "UPDATE users SET session_epoch = session_epoch + 1 WHERE id = ? \
                 RETURNING session_epoch",
            ),
            UserChange::Password(hash) => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, password_hash = ? \
                 WHERE id = ? RETURNING session_epoch",
            )
            .bind(hash),
            UserChange::Ban(at) => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, banned_at = ? \
                 WHERE id = ? RETURNING session_epoch",
            )
            .bind(to_nanos(at)),
            UserChange::Unban => sqlx::query_scalar(
                "UPDATE users SET session_epoch = session_epoch + 1, banned_at = NULL \
                 WHERE id = ? RETURNING session_epoch",
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
                    "UPDATE sessions SET epoch = ? \
                     WHERE id = ? AND user_id = ? AND revoked_at IS NULL AND epoch >= ?",
                )
                .bind(epoch)
                .bind(keep.to_string())
                .bind(user.to_string())
                .bind(epoch - 1)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected()
                    == 1
            }
            None => false,
        };
        let mut rows: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
             WHERE user_id = ? AND revoked_at IS NULL AND epoch < ? RETURNING id, expires_at",
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
            epoch: crate::sql::epoch_from_sql(epoch)?,
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
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        // Conditional on the user the login read: one writer, so nothing can change the user
        // between this check and the commit.
        let inserted = sqlx::query(
            "INSERT INTO sessions (id, user_id, kind, client_id, scope, secret_hash, csrf_hash, created_at, \
             last_seen_at, expires_at, revoked_at, revoke_reason, user_agent, ip, epoch, parent_id) \
             SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? WHERE EXISTS ( \
                 SELECT 1 FROM users u WHERE u.id = ? AND u.session_epoch = ? AND u.banned_at IS NULL) \
             AND (? IS NULL OR EXISTS (SELECT 1 FROM sessions p WHERE p.id = ? AND p.user_id = ? \
                 AND p.revoked_at IS NULL AND p.expires_at > ?))",
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
        .bind(session.user_id.to_string())
        .bind(epoch_to_sql(session.epoch))
        .bind(session.parent_id.map(|p| p.to_string()))
        .bind(session.parent_id.map(|p| p.to_string()))
        .bind(session.user_id.to_string())
        .bind(to_nanos(session.created_at))
        .execute(&mut *tx)
        .await
        .map_err(conflict_or_unavailable("session exists"))?;
        if inserted.rows_affected() != 1 {
            return Ok(CreateOutcome::UserChanged);
        }
        if let Some(t) = first_refresh_token {
            insert_refresh_token(&mut tx, t).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(CreateOutcome::Created)
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> = sqlx::query_as("SELECT * FROM sessions WHERE id = ?")
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.0))
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        let row: Option<SessionRow> =
            sqlx::query_as("SELECT * FROM sessions WHERE secret_hash = ?")
                .bind(hash.0.to_vec())
                .fetch_optional(&self.readers)
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
            "SELECT * FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? \
             ORDER BY created_at, id",
        )
        .bind(user.to_string())
        .bind(to_nanos(now))
        .fetch_all(&self.readers)
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
        let done = sqlx::query(
            "UPDATE sessions SET last_seen_at = max(last_seen_at, ?) \
             WHERE id = ? AND revoked_at IS NULL AND expires_at > ? AND last_seen_at > ?",
        )
        .bind(to_nanos(now))
        .bind(id.to_string())
        .bind(to_nanos(now))
        .bind(to_nanos(idle_cutoff))
        .execute(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        let revoked: Option<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
             WHERE id = ? AND revoked_at IS NULL RETURNING id, expires_at",
        )
        .bind(to_nanos(revocation.at))
        .bind(revocation.reason.as_str())
        .bind(id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(row) = revoked else { return Ok(false) };
        // Its children in the same transaction.
        let mut children: Vec<(String, i64)> = sqlx::query_as(
            "UPDATE sessions SET revoked_at = ?, revoke_reason = ? \
             WHERE parent_id = ? AND revoked_at IS NULL RETURNING id, expires_at",
        )
        .bind(to_nanos(revocation.at))
        .bind(revocation.reason.as_str())
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        children.sort();
        append_feed(&mut tx, &[row], revocation).await?;
        append_feed(&mut tx, &children, revocation).await?;
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
            "SELECT cursor, sid, exp, iat_before FROM revocations WHERE cursor > ? AND exp > ? ORDER BY cursor LIMIT ?",
        )
        .bind(after)
        .bind(to_nanos(now))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
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
             WHERE t.hash = ?",
        )
        .bind(hash.0.to_vec())
        .fetch_optional(&self.readers)
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
        // The conditional UPDATE is the one-time-use guard: only one caller can see a row
        // with consumed_at still NULL. The `refresh_token_rotated` trigger inserts the
        // successor and records activity in the same statement (one writer round trip).
        let consumed = sqlx::query(
            "UPDATE refresh_tokens SET consumed_at = ?, successor_hash = ?, sealed_successor = ? \
             WHERE hash = ? AND consumed_at IS NULL AND session_id = ? AND client_id = ? AND EXISTS ( \
                 SELECT 1 FROM sessions s JOIN users u ON u.id = s.user_id \
                 WHERE s.id = refresh_tokens.session_id AND s.revoked_at IS NULL AND s.expires_at > ? \
                 AND u.banned_at IS NULL AND s.epoch >= u.session_epoch)",
        )
        .bind(to_nanos(successor.issued_at))
        .bind(successor.hash.0.to_vec())
        .bind(sealed_successor.map(<[u8]>::to_vec))
        .bind(presented.0.to_vec())
        .bind(successor.session_id.to_string())
        .bind(&successor.client_id)
        .bind(to_nanos(now))
        .execute(&self.writer)
        .await
        .map_err(conflict_or_unavailable("refresh token exists"))?;
        Ok(if consumed.rows_affected() == 1 {
            RotateOutcome::Rotated
        } else {
            RotateOutcome::NotRotated
        })
    }

    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO auth_codes (hash, client_id, redirect_uri, code_challenge, user_id, session_id, \
             nonce, auth_time, scope, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.writer)
        .await
        .map_err(conflict_or_unavailable("authorization code exists"))?;
        Ok(())
    }

    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        // The conditional UPDATE is the single-use guard: one caller sees consumed_at NULL.
        let consumed = sqlx::query(
            "UPDATE auth_codes SET consumed_at = ? \
             WHERE hash = ? AND consumed_at IS NULL AND expires_at > ? RETURNING *",
        )
        .bind(to_nanos(now))
        .bind(hash.0.to_vec())
        .bind(to_nanos(now))
        .fetch_optional(&self.writer)
        .await
        .map_err(unavailable)?;
        if let Some(row) = consumed {
            return Ok(CodeOutcome::Consumed(Box::new(
                crate::sql::decode_auth_code(&row)?,
            )));
        }
        let replayed: Option<Option<String>> = sqlx::query_scalar(
            "UPDATE auth_codes SET replayed_at = ? \
             WHERE hash = ? AND consumed_at IS NOT NULL RETURNING issued_session",
        )
        .bind(to_nanos(now))
        .bind(hash.0.to_vec())
        .fetch_optional(&self.writer)
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
        // One statement, as on PostgreSQL: records the session on a consumed code only, and
        // reports whether a replay came first (then the caller revokes the session).
        let replayed: Option<bool> = sqlx::query_scalar(
            "UPDATE auth_codes SET issued_session = ? \
             WHERE hash = ? AND consumed_at IS NOT NULL RETURNING (replayed_at IS NOT NULL)",
        )
        .bind(session.to_string())
        .bind(hash.0.to_vec())
        .fetch_optional(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(replayed == Some(false))
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, private_der, created_at, activates_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&key.kid)
        .bind(&key.algorithm)
        .bind(&key.private_der)
        .bind(to_nanos(key.created_at))
        .bind(to_nanos(key.activates_at))
        .execute(&self.writer)
        .await
        .map_err(conflict_or_unavailable("key id exists"))?;
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, private_der, created_at, activates_at FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.readers)
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
        let done = sqlx::query("DELETE FROM signing_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.writer)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        let rows: Vec<UserRow> =
            sqlx::query_as("SELECT * FROM users WHERE username > ? ORDER BY username LIMIT ?")
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(&self.readers)
                .await
                .map_err(unavailable)?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND expires_at > ?",
        )
        .bind(to_nanos(now))
        .fetch_one(&self.readers)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        // Refresh tokens go with their session (ON DELETE CASCADE).
        let sessions = sqlx::query(
            "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE expires_at <= ? LIMIT ?)",
        )
        .bind(to_nanos(now))
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let budget = i64::from(limit).saturating_sub(i64::try_from(sessions).unwrap_or(i64::MAX));
        let codes = sqlx::query(
            "DELETE FROM auth_codes WHERE hash IN (SELECT hash FROM auth_codes WHERE expires_at <= ? LIMIT ?)",
        )
        .bind(to_nanos(now - AUTH_CODE_RETENTION))
        .bind(budget)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let budget = budget.saturating_sub(i64::try_from(codes).unwrap_or(i64::MAX));
        let events = sqlx::query(
            "DELETE FROM revocations WHERE cursor IN (SELECT cursor FROM revocations WHERE exp <= ? LIMIT ?)",
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
            sqlx::query_as("SELECT roles, roles_removed_at FROM users WHERE id = ?")
                .bind(user.to_string())
                .fetch_optional(&self.readers)
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
        let mut tx = self.writer.begin().await.map_err(unavailable)?;
        let previous: Option<String> = sqlx::query_scalar("SELECT roles FROM users WHERE id = ?")
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
            "UPDATE users SET roles = ?, roles_removed_at = CASE WHEN ? THEN ? ELSE roles_removed_at END WHERE id = ?",
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
                "SELECT id, expires_at FROM sessions WHERE user_id = ? AND revoked_at IS NULL AND expires_at > ? ORDER BY id",
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
async fn append_feed(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    revoked: &[(String, i64)],
    revocation: &Revocation,
) -> StoreResult<()> {
    for (sid, expires_at) in revoked {
        let exp = revocation.feed_expiry(from_nanos(*expires_at)?);
        if exp > revocation.at {
            sqlx::query("INSERT INTO revocations (sid, exp) VALUES (?, ?)")
                .bind(sid)
                .bind(to_nanos(exp))
                .execute(&mut **tx)
                .await
                .map_err(unavailable)?;
        }
    }
    Ok(())
}

async fn insert_refresh_token(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    t: &NewRefreshToken,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, session_id, client_id, issued_at) VALUES (?, ?, ?, ?)",
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

/// Appends a "stale before" feed entry (docs/decisions/0011) per `(sid, session expires_at)`.
async fn append_stale(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    sessions: &[(String, i64)],
    at: OffsetDateTime,
    access_ttl: time::Duration,
) -> StoreResult<()> {
    let iat_before = to_nanos(latchkey_core::stale_before(at));
    for (sid, expires_at) in sessions {
        let exp = (at + access_ttl).min(from_nanos(*expires_at)?);
        sqlx::query("INSERT INTO revocations (sid, exp, iat_before) VALUES (?, ?, ?)")
            .bind(sid)
            .bind(to_nanos(exp))
            .bind(iat_before)
            .execute(&mut **tx)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}
