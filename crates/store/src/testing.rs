//! Test doubles: a store wrapper whose reads or writes can be made to fail on demand, to
//! prove that callers fail closed (503) and never half-apply an operation.
use crate::{RotateOutcome, Store, StoreError, StoreResult, StoredKey};
use async_trait::async_trait;
use latchkey_core::{
    NewRefreshToken, RefreshToken, Revocation, RevocationEvent, SecretHash, Session, SessionId,
    User, UserId,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;

pub struct FlakyStore {
    inner: Arc<dyn Store>,
    fail_reads: AtomicBool,
    fail_writes: AtomicBool,
}

impl FlakyStore {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            fail_reads: AtomicBool::new(false),
            fail_writes: AtomicBool::new(false),
        }
    }

    pub fn fail_reads(&self, fail: bool) {
        self.fail_reads.store(fail, Ordering::SeqCst);
    }

    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes.store(fail, Ordering::SeqCst);
    }

    fn read(&self) -> StoreResult<()> {
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected read failure".into()));
        }
        Ok(())
    }

    fn write(&self) -> StoreResult<()> {
        if self.fail_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("injected write failure".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl Store for FlakyStore {
    async fn ping(&self) -> StoreResult<()> {
        self.read()?;
        self.inner.ping().await
    }
    async fn create_user(&self, user: &User) -> StoreResult<()> {
        self.write()?;
        self.inner.create_user(user).await
    }
    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_id(id).await
    }
    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        self.read()?;
        self.inner.user_by_username(username).await
    }
    async fn set_password_hash(&self, id: UserId, password_hash: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.set_password_hash(id, password_hash).await
    }
    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        self.write()?;
        self.inner.set_banned(id, banned_at).await
    }
    async fn create_session(
        &self,
        session: &Session,
        first: Option<&NewRefreshToken>,
    ) -> StoreResult<()> {
        self.write()?;
        self.inner.create_session(session, first).await
    }
    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner.session(id).await
    }
    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        self.read()?;
        self.inner.session_by_secret(hash).await
    }
    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        self.read()?;
        self.inner.live_sessions_of_user(user, now).await
    }
    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.write()?;
        self.inner.touch_session(id, now, idle_cutoff).await
    }
    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        self.write()?;
        self.inner.revoke_session(id, revocation).await
    }
    async fn revoke_user_sessions(
        &self,
        user: UserId,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Vec<SessionId>> {
        self.write()?;
        self.inner
            .revoke_user_sessions(user, keep, revocation)
            .await
    }
    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        self.read()?;
        self.inner.revocations_after(after, limit, now).await
    }
    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        self.read()?;
        self.inner.refresh_token(hash).await
    }
    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        self.write()?;
        self.inner
            .rotate_refresh_token(presented, successor, sealed_successor, now)
            .await
    }
    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        self.write()?;
        self.inner.insert_signing_key(key).await
    }
    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        self.read()?;
        self.inner.signing_keys().await
    }
    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        self.write()?;
        self.inner.delete_signing_key(kid).await
    }
    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        self.read()?;
        self.inner.list_users(after, limit).await
    }
    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        self.read()?;
        self.inner.count_live_sessions(now).await
    }
    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        self.write()?;
        self.inner.purge_expired(now, limit).await
    }
}
