//! Persistence for Latchkey: one [`Store`] trait and its backends.
//!
//! Every backend passes the same conformance suite ([`conformance`], behind the `conformance`
//! feature). Refresh-token rotation is one atomic step in each backend: a conditional update
//! that only one of any number of concurrent callers can win.
#![deny(clippy::unwrap_used)]

use async_trait::async_trait;
use latchkey_core::{
    AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session,
    SessionId, User, UserId,
};
use std::sync::Arc;
use time::OffsetDateTime;

pub mod bounded;
pub mod memory;
pub mod postgres;
pub mod redis;
mod sql;
pub mod sqlite;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "conformance")]
pub mod testing;

pub use self::redis::RedisStore;
pub use memory::MemoryStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (e.g. the username is taken).
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// The store could not answer. Callers fail closed (503), never guess.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A stored record could not be decoded: corruption or a schema mismatch.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A signing key as persisted: the only secret stored as such (DESIGN invariant 3).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub kid: String,
    pub algorithm: String,
    pub private_der: Vec<u8>,
    pub created_at: OffsetDateTime,
    /// Published in the JWKS from creation, but signs nothing before this instant, so
    /// verifiers have fetched it before they meet a token signed with it.
    pub activates_at: OffsetDateTime,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .finish_non_exhaustive()
    }
}

/// Result of creating a session: the write is conditional on the user the login read.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The session (and its first refresh token) was written.
    Created,
    /// Nothing was written: since the login read the user, the user's session epoch has moved
    /// (ban, unban, password change, "revoke all"), or the user is banned or gone.
    UserChanged,
}

/// What an epoch-advancing write changes on the user besides the epoch itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserChange<'a> {
    /// Nothing else: "revoke all sessions" (or all but the caller's).
    SessionsOnly,
    /// A new password hash (Argon2id PHC string).
    Password(&'a str),
    /// A ban, effective at this instant.
    Ban(OffsetDateTime),
    /// The ban lifted.
    Unban,
}

/// What [`Store::advance_user_epoch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochAdvanced {
    /// The user's new session epoch.
    pub epoch: u64,
    /// Whether the session to keep survived (it was live at the old epoch and is re-stamped
    /// with the new one). A `keep` that was already stale or revoked is revoked, never revived.
    pub kept: bool,
    /// The sessions this step revoked, in id order.
    pub revoked: Vec<SessionId>,
}

/// Result of the atomic consume-and-replace step of a rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotateOutcome {
    /// This caller consumed the token and the successor was written.
    Rotated,
    /// Nothing was written: the token was already consumed, unknown, or its family is no
    /// longer live. The caller re-reads the token and judges it again.
    NotRotated,
}

/// What [`Store::consume_auth_code`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodeOutcome {
    /// This caller consumed the code (it was unconsumed and unexpired): its record.
    Consumed(Box<AuthCode>),
    /// The code was consumed before: a replay. The code is now marked replayed, so the
    /// exchange that consumed it, if it has not yet recorded its session, learns of the replay
    /// from [`Store::record_code_session`]. `issued_session` is the session the first use
    /// created, if it has been recorded.
    Replayed { issued_session: Option<SessionId> },
    /// Unknown or expired (nothing changed).
    Invalid,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for `/readyz`.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates a user; `Conflict` if the (normalised) username is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>>;
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>>;
    /// The ban flag alone: `Some(t)` sets it, `None` clears it; the epoch does not move and no
    /// session is revoked. Returns false when no such user exists. Logins, refreshes and cookie
    /// checks honour the flag, but the ban *operation* is [`Store::advance_user_epoch`] with
    /// [`UserChange::Ban`], which also ends every session in the same step.
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool>;
    /// One step, all or nothing: applies `change` to the user, advances the user's session
    /// epoch by one, re-stamps `keep` with the new epoch if it is an unrevoked session of the
    /// user born at the old epoch, and revokes every other unrevoked session of the user (with
    /// a feed event each, as [`Store::revoke_session`]). A login that read the user before
    /// this step can no longer create a session ([`CreateOutcome::UserChanged`]), and a refresh
    /// racing it cannot rotate. `None` when no such user exists (nothing changed).
    ///
    /// The Redis backend keeps users in SQL and sessions in Redis, so there it is two steps,
    /// the SQL one first: see `redis.rs` and docs/decisions/0008.
    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>>;

    /// Creates a session and, in token mode, the first refresh token of its family, atomically,
    /// if and only if the user exists, is not banned, and its session epoch is still
    /// `session.epoch` (the one the login read before verifying the password), and, when
    /// `session.parent_id` is set, that parent is an unrevoked session of the same user
    /// before its absolute end; otherwise writes nothing and answers
    /// [`CreateOutcome::UserChanged`].
    async fn create_session(
        &self,
        session: &Session,
        first_refresh_token: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome>;
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>>;
    /// Cookie mode: the session whose secret hashes to `hash`.
    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>>;
    /// Every session of the user that is neither revoked nor past its absolute end at `now`.
    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>>;
    /// Records activity at `now`, but only if the session is still alive: unrevoked, before its
    /// absolute end, and last seen after `idle_cutoff` (now minus the idle timeout). Returns
    /// whether it was alive. The check and the write are one step, so two requests racing an
    /// idle timeout can never resurrect an expired session.
    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool>;
    /// Revokes one session; returns false if it was unknown or already revoked. A revocation
    /// that happens appends an event to the revocation feed (unless its access tokens are
    /// already all expired), atomically with the revocation. Its unrevoked children (token
    /// sessions whose `parent_id` is this session) are revoked in the same step, each with its
    /// own feed event.
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool>;
    /// Feed events with a cursor above `after` whose `exp` is after `now`, oldest first, at
    /// most `limit`. A cursor, once returned, is never followed by a smaller one.
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>>;

    /// A refresh token and its family's session, by the token's hash.
    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>>;
    /// Atomically: if `presented` is unconsumed, its session is live at `now` and was born at
    /// its user's current session epoch (every epoch advance, the ban included, moves it; the
    /// SQL backends also check the ban flag itself), mark it
    /// consumed (keeping `sealed_successor`, if any, for the grace window), insert `successor`
    /// and record `now` as the session's last activity. Of any number of concurrent calls for
    /// one token, at most one rotates. The successor belongs to the presented token's session
    /// and client and is issued at `now` (backends may derive those fields from the token).
    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome>;

    /// Stores a new authorization code (only its hash); `Conflict` if the hash exists.
    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()>;
    /// Atomically: consumes the code whose hash is `hash` if it is unconsumed and `now` is
    /// before its end. Of any number of concurrent calls, at most one gets
    /// [`CodeOutcome::Consumed`]; a code consumed before is marked replayed.
    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome>;
    /// Records the token session the exchange of a consumed code created. Returns false when
    /// the code was replayed in the meantime (or is gone): the caller then revokes `session`.
    async fn record_code_session(&self, hash: &SecretHash, session: SessionId)
    -> StoreResult<bool>;

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()>;
    /// Every stored signing key, oldest first.
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>>;
    /// Removes a retired key; returns false if it was not there.
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool>;

    /// Users ordered by username, starting after `after` (a username), at most `limit`.
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>>;

    /// Deletes up to `limit` records that can no longer matter at `now`: sessions past their
    /// absolute end (with their refresh tokens), feed events past their `exp`, and
    /// authorization codes more than [`latchkey_core::AUTH_CODE_RETENTION`] past their end. Returns how
    /// many it deleted, so callers can loop in small batches.
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64>;

    /// Sessions before their absolute end at `now`, for the `latchkey_sessions_live` gauge
    /// (sampled, not on the request path). SQL backends leave revoked sessions out; Redis
    /// counts them until their end (an approximation, documented).
    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64>;

    // ---- Roles (docs/decisions/0011) ----

    /// The user's roles (sorted) and the instant a role was last removed from them; `None`
    /// when no such user exists.
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<UserRoles>>;
    /// One step, all or nothing: replaces the user's roles with `roles` (valid, sorted, no
    /// duplicates: see `latchkey_core::normalize_roles`). When that removes at least one role,
    /// also records `at` as the last removal and appends, for every live session of the user, a
    /// feed entry with `iat_before = latchkey_core::stale_before(at)` and `exp` = when the
    /// session's last access token minted so far expires (`at + access_ttl`, never after the
    /// session's end). No session is revoked. `None` when no such user exists.
    ///
    /// The Redis backend sets the roles in SQL, then appends the entries in Redis: two steps,
    /// and a retry of the same call re-appends them while the last removal may still matter.
    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<RolesChanged>>;
}

/// A user's roles as stored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserRoles {
    /// Sorted, without duplicates.
    pub roles: Vec<String>,
    /// When a role was last removed: tokens minted before `stale_before(removed_at)` may carry
    /// it. Latchkey mints no token with an earlier `iat` than that.
    pub removed_at: Option<OffsetDateTime>,
}

/// What [`Store::set_user_roles`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RolesChanged {
    /// The roles before the change.
    pub previous: Vec<String>,
    /// The roles now (as given).
    pub roles: Vec<String>,
    /// The sessions that got a "stale before" feed entry, in id order (empty unless a role
    /// was removed).
    pub stale: Vec<SessionId>,
}

/// Roles as stored in one SQL column or Redis field: the names joined by `,` (a character no
/// role name has).
pub(crate) fn encode_roles(roles: &[String]) -> String {
    roles.join(",")
}

pub(crate) fn decode_roles(text: &str) -> StoreResult<Vec<String>> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let roles: Vec<String> = text.split(',').map(str::to_string).collect();
    if roles.iter().all(|r| latchkey_core::is_valid_role(r)) {
        Ok(roles)
    } else {
        Err(StoreError::Corrupt("stored roles".into()))
    }
}

/// Opens the store named by a `database` URL (`sqlite:…`, `memory:`), running migrations.
pub async fn connect(url: &str) -> StoreResult<Arc<dyn Store>> {
    if url == "memory:" || url == "memory://" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(SqliteStore::connect(url).await?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(PostgresStore::connect(url).await?));
    }
    Err(StoreError::Unavailable(format!(
        "unsupported database URL scheme in {:?}: expected sqlite://, postgres:// or memory:",
        redact_url(url)
    )))
}

/// Opens the configured store: the `database` URL, with sessions, refresh families and the
/// revocation feed moved to Redis when `redis` is set (users and keys stay in SQL).
pub async fn open(
    database: &str,
    redis: Option<&str>,
    redis_prefix: &str,
) -> StoreResult<Arc<dyn Store>> {
    open_with_redis_tls_ca(database, redis, redis_prefix, None).await
}

/// [`open`], with the CA (PEM) a `rediss://` Redis is checked against instead of the system's.
pub async fn open_with_redis_tls_ca(
    database: &str,
    redis: Option<&str>,
    redis_prefix: &str,
    redis_tls_ca: Option<&[u8]>,
) -> StoreResult<Arc<dyn Store>> {
    let sql = connect(database).await?;
    match redis {
        None => Ok(sql),
        Some(url) => Ok(Arc::new(
            RedisStore::with_tls_ca(sql, url, redis_prefix, redis_tls_ca).await?,
        )),
    }
}

/// Hides a password in a connection URL before it goes into a message: the one in the user
/// info (`postgres://u:***@h/db`) and any `password=` query parameter (`?password=***`).
pub fn redact_url(url: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let mut out = match (main.find("://"), main.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &main[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &main[..scheme_end + 3],
                    &userinfo[..colon],
                    &main[at..]
                ),
                None => main.to_string(),
            }
        }
        _ => main.to_string(),
    };
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if name.eq_ignore_ascii_case("password") => format!("{name}=***"),
                _ => pair.to_string(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            super::redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact_url("sqlite://latchkey.db"),
            "sqlite://latchkey.db"
        );
        assert_eq!(
            super::redact_url("postgres://h/db?sslmode=require&password=secret"),
            "postgres://h/db?sslmode=require&password=***"
        );
        assert_eq!(
            super::redact_url("redis://:secret@h:6379/0"),
            "redis://:***@h:6379/0"
        );
    }
}
