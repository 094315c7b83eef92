//! A client-side deadline on every call of a store whose server may hang.
//!
//! A server that stops answering without closing its connections (a stopped process, a frozen
//! VM, a network that drops packets) cannot enforce its own `statement_timeout`, and the pool's
//! acquire timeout covers only getting a connection, not using it. [`Bounded`] ends every call
//! that has not finished within its limit with [`StoreError::Unavailable`], so a request gets
//! its 503 in bounded time instead of hanging (DESIGN invariant 4: fail closed). A call cut
//! off this way may still have been applied by the server (its answer was lost), exactly as
//! when a connection drops after a commit; a transaction that had not committed is rolled back.
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoreResult,
    StoredKey, UserChange,
};
use async_trait::async_trait;
use latchkey_core::{
    AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session,
    SessionId, User, UserId,
};
use std::future::Future;
use std::time::Duration;
use time::OffsetDateTime;

/// How long a call may take before it is given up as unavailable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Every call but [`Store::ping`]: a whole operation, waiting for a connection and every
    /// statement of its transaction included.
    pub call: Duration,
    /// [`Store::ping`], for `/readyz`: a load balancer's probe gives up after a second or two.
    pub ping: Duration,
}

/// `inner` with a deadline on every call.
pub struct Bounded<S> {
    inner: S,
    limits: Limits,
}

impl<S> Bounded<S> {
    pub fn new(inner: S, limits: Limits) -> Self {
        Self { inner, limits }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

async fn within<T>(
    limit: Duration,
    what: &'static str,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what}: no answer from the database within {} ms",
            limit.as_millis()
        ))),
    }
}

#[async_trait]
impl<S: Store> Store for Bounded<S> {
    async fn ping(&self) -> StoreResult<()> {
        within(self.limits.ping, "ping", self.inner.ping()).await
    }
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        within(
            self.limits.call,
            "create_user",
            self.inner.create_user(user),
        )
        .await
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        within(self.limits.call, "user_by_id", self.inner.user_by_id(id)).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        within(
            self.limits.call,
            "user_by_username",
            self.inner.user_by_username(username),
        )
        .await
    }
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        within(
            self.limits.call,
            "set_banned",
            self.inner.set_banned(id, banned_at),
        )
        .await
    }
    async fn create_session(
        &self,
        session: &Session,
        first: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        within(
            self.limits.call,
            "create_session",
            self.inner.create_session(session, first),
        )
        .await
    }
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        within(self.limits.call, "session", self.inner.session(id)).await
    }
    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        within(
            self.limits.call,
            "session_by_secret",
            self.inner.session_by_secret(hash),
        )
        .await
    }
    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        within(
            self.limits.call,
            "live_sessions_of_user",
            self.inner.live_sessions_of_user(user, now),
        )
        .await
    }
    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        within(
            self.limits.call,
            "touch_session",
            self.inner.touch_session(id, now, idle_cutoff),
        )
        .await
    }
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        within(
            self.limits.call,
            "revoke_session",
            self.inner.revoke_session(id, revocation),
        )
        .await
    }
    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        within(
            self.limits.call,
            "advance_user_epoch",
            self.inner
                .advance_user_epoch(user, change, keep, revocation),
        )
        .await
    }
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        within(
            self.limits.call,
            "revocations_after",
            self.inner.revocations_after(after, limit, now),
        )
        .await
    }
    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        within(
            self.limits.call,
            "refresh_token",
            self.inner.refresh_token(hash),
        )
        .await
    }
    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        within(
            self.limits.call,
            "rotate_refresh_token",
            self.inner
                .rotate_refresh_token(presented, successor, sealed_successor, now),
        )
        .await
    }
    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        within(
            self.limits.call,
            "insert_auth_code",
            self.inner.insert_auth_code(code),
        )
        .await
    }
    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        within(
            self.limits.call,
            "consume_auth_code",
            self.inner.consume_auth_code(hash, now),
        )
        .await
    }
    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        within(
            self.limits.call,
            "record_code_session",
            self.inner.record_code_session(hash, session),
        )
        .await
    }
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        within(
            self.limits.call,
            "insert_signing_key",
            self.inner.insert_signing_key(key),
        )
        .await
    }
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        within(self.limits.call, "signing_keys", self.inner.signing_keys()).await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        within(
            self.limits.call,
            "delete_signing_key",
            self.inner.delete_signing_key(kid),
        )
        .await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        within(
            self.limits.call,
            "list_users",
            self.inner.list_users(after, limit),
        )
        .await
    }
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        within(
            self.limits.call,
            "purge_expired",
            self.inner.purge_expired(now, limit),
        )
        .await
    }
    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        within(
            self.limits.call,
            "count_live_sessions",
            self.inner.count_live_sessions(now),
        )
        .await
    }
    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<crate::UserRoles>> {
        within(self.limits.call, "user_roles", self.inner.user_roles(user)).await
    }
    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<crate::RolesChanged>> {
        within(
            self.limits.call,
            "set_user_roles",
            self.inner.set_user_roles(user, roles, at, access_ttl),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use std::time::Instant;

    /// A store whose every call hangs, like a stopped server.
    struct Hung;

    #[async_trait]
    impl Store for Hung {
        async fn ping(&self) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn create_user(&self, _: &User) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn user_by_id(&self, _: UserId) -> StoreResult<Option<User>> {
            std::future::pending().await
        }
        async fn user_by_username(&self, _: &str) -> StoreResult<Option<User>> {
            std::future::pending().await
        }
        async fn set_banned(&self, _: UserId, _: Option<OffsetDateTime>) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn create_session(
            &self,
            _: &Session,
            _: Option<&NewRefreshToken>,
        ) -> StoreResult<CreateOutcome> {
            std::future::pending().await
        }
        async fn session(&self, _: SessionId) -> StoreResult<Option<Session>> {
            std::future::pending().await
        }
        async fn session_by_secret(&self, _: &SecretHash) -> StoreResult<Option<Session>> {
            std::future::pending().await
        }
        async fn live_sessions_of_user(
            &self,
            _: UserId,
            _: OffsetDateTime,
        ) -> StoreResult<Vec<Session>> {
            std::future::pending().await
        }
        async fn touch_session(
            &self,
            _: SessionId,
            _: OffsetDateTime,
            _: OffsetDateTime,
        ) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn revoke_session(&self, _: SessionId, _: &Revocation) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn advance_user_epoch(
            &self,
            _: UserId,
            _: UserChange<'_>,
            _: Option<SessionId>,
            _: &Revocation,
        ) -> StoreResult<Option<EpochAdvanced>> {
            std::future::pending().await
        }
        async fn revocations_after(
            &self,
            _: i64,
            _: u32,
            _: OffsetDateTime,
        ) -> StoreResult<Vec<RevocationEvent>> {
            std::future::pending().await
        }
        async fn refresh_token(
            &self,
            _: &SecretHash,
        ) -> StoreResult<Option<(RefreshToken, Session)>> {
            std::future::pending().await
        }
        async fn rotate_refresh_token(
            &self,
            _: &SecretHash,
            _: &NewRefreshToken,
            _: Option<&[u8]>,
            _: OffsetDateTime,
        ) -> StoreResult<RotateOutcome> {
            std::future::pending().await
        }
        async fn insert_auth_code(&self, _: &AuthCode) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn consume_auth_code(
            &self,
            _: &SecretHash,
            _: OffsetDateTime,
        ) -> StoreResult<CodeOutcome> {
            std::future::pending().await
        }
        async fn record_code_session(&self, _: &SecretHash, _: SessionId) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn insert_signing_key(&self, _: &StoredKey) -> StoreResult<()> {
            std::future::pending().await
        }
        async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
            std::future::pending().await
        }
        async fn delete_signing_key(&self, _: &str) -> StoreResult<bool> {
            std::future::pending().await
        }
        async fn list_users(&self, _: Option<&str>, _: u32) -> StoreResult<Vec<User>> {
            std::future::pending().await
        }
        async fn purge_expired(&self, _: OffsetDateTime, _: u32) -> StoreResult<u64> {
            std::future::pending().await
        }
        async fn count_live_sessions(&self, _: OffsetDateTime) -> StoreResult<u64> {
            std::future::pending().await
        }
        async fn user_roles(&self, _: UserId) -> StoreResult<Option<crate::UserRoles>> {
            std::future::pending().await
        }
        async fn set_user_roles(
            &self,
            _: UserId,
            _: &[String],
            _: OffsetDateTime,
            _: time::Duration,
        ) -> StoreResult<Option<crate::RolesChanged>> {
            std::future::pending().await
        }
    }

    const LIMITS: Limits = Limits {
        call: Duration::from_millis(200),
        ping: Duration::from_millis(50),
    };

    #[tokio::test]
    async fn a_hung_store_is_unavailable_within_the_limit() {
        let store = Bounded::new(Hung, LIMITS);
        let started = Instant::now();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(
            started.elapsed() < Duration::from_millis(180),
            "ping waited for the call limit"
        );
        let started = Instant::now();
        let result = store.session(SessionId::new()).await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(_))),
            "{result:?}"
        );
        assert!(started.elapsed() >= LIMITS.call);
        assert!(started.elapsed() < Duration::from_secs(2));
        let result = store.signing_keys().await;
        assert!(
            matches!(result, Err(StoreError::Unavailable(ref m)) if m.contains("signing_keys"))
        );
    }

    #[tokio::test]
    async fn a_store_that_answers_is_passed_through() {
        let store = Bounded::new(MemoryStore::new(), LIMITS);
        store.ping().await.expect("ping");
        assert_eq!(store.session(SessionId::new()).await.expect("read"), None);
    }
}
