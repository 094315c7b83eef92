//! In-memory backend: for tests and throwaway runs. One mutex makes every operation atomic.
use crate::{
    CodeOutcome, CreateOutcome, EpochAdvanced, RotateOutcome, Store, StoreError, StoreResult,
    StoredKey, UserChange,
};
use async_trait::async_trait;
use latchkey_core::{
    AUTH_CODE_RETENTION, AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent,
    SecretHash, Session, SessionId, User, UserId,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use time::OffsetDateTime;

#[derive(Default)]
struct Inner {
    users: HashMap<UserId, User>,
    sessions: HashMap<SessionId, Session>,
    refresh_tokens: HashMap<SecretHash, StoredRefresh>,
    keys: Vec<StoredKey>,
    /// Roles per user (docs/decisions/0011); absent = none.
    roles: HashMap<UserId, crate::UserRoles>,
    /// The revocation feed, in cursor order.
    feed: Vec<RevocationEvent>,
    next_cursor: i64,
    /// Authorization codes by hash, with whether a replay was seen.
    codes: HashMap<SecretHash, (AuthCode, bool)>,
}

struct StoredRefresh {
    token: RefreshToken,
    successor: Option<SecretHash>,
}

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every write is a single step).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn with_successor_state(&self, stored: &StoredRefresh) -> RefreshToken {
        let mut token = stored.token.clone();
        token.successor_consumed = stored
            .successor
            .and_then(|h| self.refresh_tokens.get(&h))
            .is_some_and(|s| s.token.consumed_at.is_some());
        token
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.users.values().any(|u| u.username == user.username) {
            return Err(StoreError::Conflict("username is taken"));
        }
        if inner.users.contains_key(&user.id) {
            return Err(StoreError::Conflict("user id exists"));
        }
        inner.users.insert(user.id, user.clone());
        Ok(())
    }

    async fn user_by_id(&self, id: UserId) -> StoreResult<Option<User>> {
        Ok(self.lock().users.get(&id).cloned())
    }

    async fn user_by_username(&self, username: &str) -> StoreResult<Option<User>> {
        Ok(self
            .lock()
            .users
            .values()
            .find(|u| u.username == username)
            .cloned())
    }

    async fn set_banned(&self, id: UserId, banned_at: Option<OffsetDateTime>) -> StoreResult<bool> {
        Ok(self
            .lock()
            .users
            .get_mut(&id)
            .map(|u| u.banned_at = banned_at)
            .is_some())
    }

    async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        revocation: &Revocation,
    ) -> StoreResult<Option<EpochAdvanced>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(u) = inner.users.get_mut(&user) else {
            return Ok(None);
        };
        match change {
            UserChange::SessionsOnly => {}
            UserChange::Password(hash) => u.password_hash = hash.to_string(),
            UserChange::Ban(at) => u.banned_at = Some(at),
            UserChange::Unban => u.banned_at = None,
        }
        let old = u.session_epoch;
        u.session_epoch = old.saturating_add(1);
        let epoch = u.session_epoch;
        let mut kept = false;
        if let Some(s) = keep.and_then(|k| inner.sessions.get_mut(&k))
            && s.user_id == user
            && s.revoked_at.is_none()
            && s.epoch >= old
        {
            s.epoch = epoch;
            kept = true;
        }
        let mut targets: Vec<&mut Session> = inner
            .sessions
            .values_mut()
            .filter(|s| s.user_id == user && s.revoked_at.is_none() && s.epoch < epoch)
            .collect();
        targets.sort_by_key(|s| s.id);
        let mut revoked = Vec::with_capacity(targets.len());
        for s in targets {
            revoke_one(s, revocation, &mut inner.feed, &mut inner.next_cursor);
            revoked.push(s.id);
        }
        Ok(Some(EpochAdvanced {
            epoch,
            kept,
            revoked,
        }))
    }

    async fn create_session(
        &self,
        session: &Session,
        first_refresh_token: Option<&NewRefreshToken>,
    ) -> StoreResult<CreateOutcome> {
        let mut inner = self.lock();
        let current = inner
            .users
            .get(&session.user_id)
            .is_some_and(|u| !u.is_banned() && u.session_epoch == session.epoch);
        if !current {
            return Ok(CreateOutcome::UserChanged);
        }
        if let Some(parent) = session.parent_id {
            let parent_live = inner
                .sessions
                .get(&parent)
                .is_some_and(|p| p.user_id == session.user_id && p.is_live(session.created_at));
            if !parent_live {
                return Ok(CreateOutcome::UserChanged);
            }
        }
        if inner.sessions.contains_key(&session.id) {
            return Err(StoreError::Conflict("session id exists"));
        }
        if let Some(t) = first_refresh_token {
            if inner.refresh_tokens.contains_key(&t.hash) {
                return Err(StoreError::Conflict("refresh token exists"));
            }
            inner.refresh_tokens.insert(t.hash, new_stored(t));
        }
        inner.sessions.insert(session.id, session.clone());
        Ok(CreateOutcome::Created)
    }

    async fn session(&self, id: SessionId) -> StoreResult<Option<Session>> {
        Ok(self.lock().sessions.get(&id).cloned())
    }

    async fn session_by_secret(&self, hash: &SecretHash) -> StoreResult<Option<Session>> {
        Ok(self
            .lock()
            .sessions
            .values()
            .find(|s| s.secret_hash.as_ref() == Some(hash))
            .cloned())
    }

    async fn live_sessions_of_user(
        &self,
        user: UserId,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        let mut sessions: Vec<Session> = self
            .lock()
            .sessions
            .values()
            .filter(|s| s.user_id == user && s.is_live(now))
            .cloned()
            .collect();
        sessions.sort_by_key(|s| (s.created_at, s.id));
        Ok(sessions)
    }

    async fn touch_session(
        &self,
        id: SessionId,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<bool> {
        match self.lock().sessions.get_mut(&id) {
            Some(s) if s.is_live(now) && s.last_seen_at > idle_cutoff => {
                s.last_seen_at = s.last_seen_at.max(now);
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn revoke_session(&self, id: SessionId, revocation: &Revocation) -> StoreResult<bool> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        match inner.sessions.get_mut(&id) {
            Some(s) if s.revoked_at.is_none() => {
                revoke_one(s, revocation, &mut inner.feed, &mut inner.next_cursor);
            }
            _ => return Ok(false),
        }
        // Its children, under the same lock: one step.
        let mut children: Vec<SessionId> = inner
            .sessions
            .values()
            .filter(|c| c.parent_id == Some(id) && c.revoked_at.is_none())
            .map(|c| c.id)
            .collect();
        children.sort();
        for child in children {
            if let Some(c) = inner.sessions.get_mut(&child) {
                revoke_one(c, revocation, &mut inner.feed, &mut inner.next_cursor);
            }
        }
        Ok(true)
    }

    async fn revocations_after(
        &self,
        after: i64,
        limit: u32,
        now: OffsetDateTime,
    ) -> StoreResult<Vec<RevocationEvent>> {
        Ok(self
            .lock()
            .feed
            .iter()
            .filter(|e| e.cursor > after && e.exp > now)
            .take(limit as usize)
            .copied()
            .collect())
    }

    async fn refresh_token(
        &self,
        hash: &SecretHash,
    ) -> StoreResult<Option<(RefreshToken, Session)>> {
        let inner = self.lock();
        let Some(stored) = inner.refresh_tokens.get(hash) else {
            return Ok(None);
        };
        let session = inner
            .sessions
            .get(&stored.token.session_id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("refresh token without session".into()))?;
        Ok(Some((inner.with_successor_state(stored), session)))
    }

    async fn rotate_refresh_token(
        &self,
        presented: &SecretHash,
        successor: &NewRefreshToken,
        sealed_successor: Option<&[u8]>,
        now: OffsetDateTime,
    ) -> StoreResult<RotateOutcome> {
        let mut inner = self.lock();
        let Some(stored) = inner.refresh_tokens.get(presented) else {
            return Ok(RotateOutcome::NotRotated);
        };
        let family_live = inner
            .sessions
            .get(&stored.token.session_id)
            .is_some_and(|s| {
                s.is_live(now) && inner.users.get(&s.user_id).is_some_and(|u| u.admits(s))
            });
        if stored.token.consumed_at.is_some() || !family_live {
            return Ok(RotateOutcome::NotRotated);
        }
        if inner.refresh_tokens.contains_key(&successor.hash) {
            return Err(StoreError::Conflict("refresh token exists"));
        }
        if let Some(stored) = inner.refresh_tokens.get_mut(presented) {
            stored.token.consumed_at = Some(now);
            stored.token.sealed_successor = sealed_successor.map(<[u8]>::to_vec);
            stored.successor = Some(successor.hash);
        }
        inner
            .refresh_tokens
            .insert(successor.hash, new_stored(successor));
        if let Some(s) = inner.sessions.get_mut(&successor.session_id) {
            s.last_seen_at = s.last_seen_at.max(now);
        }
        Ok(RotateOutcome::Rotated)
    }

    async fn insert_signing_key(&self, key: &StoredKey) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.keys.iter().any(|k| k.kid == key.kid) {
            return Err(StoreError::Conflict("key id exists"));
        }
        inner.keys.push(key.clone());
        Ok(())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<StoredKey>> {
        let mut keys = self.lock().keys.clone();
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    async fn delete_signing_key(&self, kid: &str) -> StoreResult<bool> {
        let mut inner = self.lock();
        let before = inner.keys.len();
        inner.keys.retain(|k| k.kid != kid);
        Ok(inner.keys.len() < before)
    }

    async fn list_users(&self, after: Option<&str>, limit: u32) -> StoreResult<Vec<User>> {
        let mut users: Vec<User> = self
            .lock()
            .users
            .values()
            .filter(|u| after.is_none_or(|a| u.username.as_str() > a))
            .cloned()
            .collect();
        users.sort_by(|a, b| a.username.cmp(&b.username));
        users.truncate(limit as usize);
        Ok(users)
    }

    async fn count_live_sessions(&self, now: OffsetDateTime) -> StoreResult<u64> {
        Ok(self
            .lock()
            .sessions
            .values()
            .filter(|s| s.is_live(now))
            .count() as u64)
    }

    async fn insert_auth_code(&self, code: &AuthCode) -> StoreResult<()> {
        let mut inner = self.lock();
        if inner.codes.contains_key(&code.hash) {
            return Err(StoreError::Conflict("authorization code exists"));
        }
        inner.codes.insert(code.hash, (code.clone(), false));
        Ok(())
    }

    async fn consume_auth_code(
        &self,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> StoreResult<CodeOutcome> {
        let mut inner = self.lock();
        Ok(match inner.codes.get_mut(hash) {
            Some((code, replayed)) if code.consumed_at.is_some() => {
                *replayed = true;
                CodeOutcome::Replayed {
                    issued_session: code.issued_session,
                }
            }
            Some((code, _)) if now < code.expires_at => {
                code.consumed_at = Some(now);
                CodeOutcome::Consumed(Box::new(code.clone()))
            }
            _ => CodeOutcome::Invalid,
        })
    }

    async fn record_code_session(
        &self,
        hash: &SecretHash,
        session: SessionId,
    ) -> StoreResult<bool> {
        let mut inner = self.lock();
        Ok(match inner.codes.get_mut(hash) {
            Some((code, replayed)) if code.consumed_at.is_some() => {
                code.issued_session = Some(session);
                !*replayed
            }
            _ => false,
        })
    }

    async fn purge_expired(&self, now: OffsetDateTime, limit: u32) -> StoreResult<u64> {
        let mut inner = self.lock();
        let mut budget = limit as usize;
        let old_codes: Vec<SecretHash> = inner
            .codes
            .values()
            .filter(|(c, _)| c.expires_at + AUTH_CODE_RETENTION <= now)
            .map(|(c, _)| c.hash)
            .take(budget)
            .collect();
        budget -= old_codes.len();
        for hash in &old_codes {
            inner.codes.remove(hash);
        }
        let dead: Vec<SessionId> = inner
            .sessions
            .values()
            .filter(|s| s.expires_at <= now)
            .map(|s| s.id)
            .take(budget)
            .collect();
        budget -= dead.len();
        for id in &dead {
            inner.sessions.remove(id);
        }
        inner
            .refresh_tokens
            .retain(|_, t| !dead.contains(&t.token.session_id));
        let mut removed_events = 0;
        inner.feed.retain(|e| {
            if e.exp <= now && removed_events < budget {
                removed_events += 1;
                false
            } else {
                true
            }
        });
        Ok((old_codes.len() + dead.len() + removed_events) as u64)
    }
    // ---- Roles (docs/decisions/0011) ----
    async fn user_roles(&self, user: UserId) -> StoreResult<Option<crate::UserRoles>> {
        let inner = self.lock();
        if !inner.users.contains_key(&user) {
            return Ok(None);
        }
        Ok(Some(inner.roles.get(&user).cloned().unwrap_or_default()))
    }

    async fn set_user_roles(
        &self,
        user: UserId,
        roles: &[String],
        at: OffsetDateTime,
        access_ttl: time::Duration,
    ) -> StoreResult<Option<crate::RolesChanged>> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        if !inner.users.contains_key(&user) {
            return Ok(None);
        }
        let entry = inner.roles.entry(user).or_default();
        let previous = std::mem::replace(&mut entry.roles, roles.to_vec());
        let mut stale = Vec::new();
        if latchkey_core::removes_any(&previous, roles) {
            entry.removed_at = Some(at);
            let iat_before = latchkey_core::stale_before(at);
            let mut live: Vec<&Session> = inner
                .sessions
                .values()
                .filter(|s| s.user_id == user && s.is_live(at))
                .collect();
            live.sort_by_key(|s| s.id);
            for s in live {
                let exp = (at + access_ttl).min(s.expires_at);
                inner.next_cursor += 1;
                inner.feed.push(RevocationEvent {
                    cursor: inner.next_cursor,
                    sid: s.id,
                    exp,
                    iat_before: Some(iat_before),
                });
                stale.push(s.id);
            }
        }
        Ok(Some(crate::RolesChanged {
            previous,
            roles: roles.to_vec(),
            stale,
        }))
    }
}

/// Marks one session revoked and, if any of its access tokens may still be live, appends a
/// feed event.
fn revoke_one(
    s: &mut Session,
    revocation: &Revocation,
    feed: &mut Vec<RevocationEvent>,
    next: &mut i64,
) {
    s.revoked_at = Some(revocation.at);
    s.revoke_reason = Some(revocation.reason);
    let exp = revocation.feed_expiry(s.expires_at);
    if exp > revocation.at {
        *next += 1;
        feed.push(RevocationEvent {
            cursor: *next,
            sid: s.id,
            exp,
            iat_before: None,
        });
    }
}

fn new_stored(t: &NewRefreshToken) -> StoredRefresh {
    StoredRefresh {
        token: RefreshToken {
            hash: t.hash,
            session_id: t.session_id,
            client_id: t.client_id.clone(),
            issued_at: t.issued_at,
            consumed_at: None,
            sealed_successor: None,
            successor_consumed: false,
        },
        successor: None,
    }
}
