//! Access tokens minted for BFF routes, cached per (session, token profile) where a profile
//! is a route's audience and scope.
//!
//! A token is minted once and reused until shortly before it expires ([`margin`]), never per
//! request. The cache never decides who is authenticated: every proxied request checks the
//! session in the store first, so a revoked session's token is never sent again. Entries go
//! when their session is revoked (this instance follows the revocation feed, which every
//! instance writes), when they expire, and, as a backstop, in a periodic sweep.
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::HeaderValue;
use latchkey_core::{Session, SessionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use time::{Duration, OffsetDateTime};
use tokio::sync::broadcast::error::RecvError;

/// The `client_id` claim of tokens minted by the BFF.
pub const BFF_CLIENT_ID: &str = "latchkey-bff";
/// Sessions with cached tokens before the cache is emptied (a bound, not a working size).
const MAX_SESSIONS: usize = 200_000;
/// How often expired and revoked entries are swept out.
const SWEEP_EVERY: Duration = Duration::seconds(30);

/// A token as sent upstream.
#[derive(Clone)]
pub struct Minted {
    /// `Bearer <token>`.
    pub header: HeaderValue,
    pub token: Arc<str>,
}

struct Entry {
    profile: usize,
    minted: Minted,
    exp: OffsetDateTime,
}

#[derive(Default)]
struct Entries {
    by_session: HashMap<SessionId, Vec<Entry>>,
    last_sweep: Option<OffsetDateTime>,
    /// Set when revocation events were missed: the next sweep runs at once.
    sweep_now: bool,
}

#[derive(Default)]
pub struct TokenCache {
    entries: Mutex<Entries>,
    listening: AtomicBool,
    minted: AtomicU64,
}

/// Re-mint this long before expiry: a minute, or a quarter of a short token lifetime, so an
/// upstream always receives a token with some life left.
pub fn margin(access_ttl: Duration) -> Duration {
    (access_ttl / 4_i32).min(Duration::minutes(1))
}

impl TokenCache {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The token for `session` (already authenticated) and the route's profile: the cached
    /// one while it has more than [`margin`] to live (or cannot be outlived: the session ends
    /// first), else a new one carrying the user's current roles. A cached token is dropped
    /// when its session appears on the feed, "stale before" entries of a role removal included.
    pub async fn get(
        self: &Arc<Self>,
        state: &AppState,
        session: &Session,
        profile: usize,
        audience: &str,
        scope: &str,
    ) -> Result<Minted, ApiError> {
        if let Some(cached) = self.cached(state, session, profile) {
            return Ok(cached);
        }
        // The user's roles ride in the token (docs/decisions/0011): read them, outside the lock.
        let (roles, now) = crate::issue::roles_at_mint(state, session.user_id).await?;
        let mut entries = self.lock();
        // Concurrent requests of one session that missed together share the first one's token.
        if let Some(cached) = Self::hit(&entries, state, session, profile, state.clock.now()) {
            return Ok(cached);
        }
        if entries.sweep_now
            || entries.last_sweep.is_none_or(|t| now - t >= SWEEP_EVERY)
            || entries.by_session.len() >= MAX_SESSIONS
        {
            sweep(&mut entries, state, now);
        }
        let (minted, exp) = mint(state, session, audience, scope, roles, now)?;
        self.minted.fetch_add(1, Ordering::Relaxed);
        let list = entries.by_session.entry(session.id).or_default();
        list.retain(|e| e.profile != profile);
        list.push(Entry {
            profile,
            minted: minted.clone(),
            exp,
        });
        drop(entries);
        self.listen(state);
        Ok(minted)
    }

    /// The cached token for `session` and `profile`, while it has more than [`margin`] to
    /// live (or cannot be outlived: the session ends first).
    fn cached(&self, state: &AppState, session: &Session, profile: usize) -> Option<Minted> {
        Self::hit(&self.lock(), state, session, profile, state.clock.now())
    }

    fn hit(
        entries: &Entries,
        state: &AppState,
        session: &Session,
        profile: usize,
        now: OffsetDateTime,
    ) -> Option<Minted> {
        let margin = margin(state.policy.access_ttl);
        // The expiry a token minted now would get (the session's end caps it).
        let fresh_exp = whole_seconds(state.policy.access_expiry(session, now));
        entries
            .by_session
            .get(&session.id)
            .and_then(|list| list.iter().find(|e| e.profile == profile))
            .filter(|entry| now < entry.exp && (entry.exp - now > margin || entry.exp >= fresh_exp))
            .map(|entry| entry.minted.clone())
    }

    /// Forgets every token of a session.
    pub fn forget(&self, sid: &SessionId) {
        self.lock().by_session.remove(sid);
    }

    /// Whether any token of `sid` is cached (for tests and diagnostics).
    pub fn holds(&self, sid: &SessionId) -> bool {
        self.lock().by_session.contains_key(sid)
    }

    /// Sessions with cached tokens.
    pub fn sessions(&self) -> usize {
        self.lock().by_session.len()
    }

    /// Tokens minted since start.
    pub fn minted(&self) -> u64 {
        self.minted.load(Ordering::Relaxed)
    }

    /// Once per cache: follow this instance's revocation events and drop the revoked
    /// sessions' tokens as they arrive. The task ends with the state (its sender closes).
    fn listen(self: &Arc<Self>, state: &AppState) {
        if self.listening.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut events = state.follower.subscribe();
        let cache: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let event = events.recv().await;
                let Some(cache) = cache.upgrade() else { break };
                match event {
                    Ok(event) => cache.forget(&event.sid),
                    Err(RecvError::Lagged(_)) => cache.lock().sweep_now = true,
                    Err(RecvError::Closed) => break,
                }
            }
        });
    }
}

/// Drops expired entries and those of sessions on the revocation feed.
fn sweep(entries: &mut Entries, state: &AppState, now: OffsetDateTime) {
    entries.by_session.retain(|sid, list| {
        list.retain(|e| e.exp > now);
        !list.is_empty() && !state.follower.is_revoked(sid)
    });
    if entries.by_session.len() >= MAX_SESSIONS {
        tracing::warn!(
            sessions = entries.by_session.len(),
            "BFF token cache full; emptied (tokens are minted again on demand)"
        );
        entries.by_session.clear();
    }
    entries.last_sweep = Some(now);
    entries.sweep_now = false;
}

/// `exp` as the JWT carries it.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.unix_timestamp()).unwrap_or(t)
}

/// Signs an RFC 9068 access token for the session and the route's audience.
fn mint(
    state: &AppState,
    session: &Session,
    audience: &str,
    scope: &str,
    roles: Vec<String>,
    now: OffsetDateTime,
) -> Result<(Minted, OffsetDateTime), ApiError> {
    let exp = whole_seconds(state.policy.access_expiry(session, now));
    let who = crate::issue::TokenFor {
        sub: session.user_id.to_string(),
        sid: session.id.to_string(),
        client_id: BFF_CLIENT_ID,
        audience,
        scope,
        roles,
    };
    let token = crate::issue::sign(state, who, now, exp)?.token;
    let mut header = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| ApiError::Internal("a signed token is not a header value".into()))?;
    header.set_sensitive(true);
    tracing::debug!(sid = %session.id, aud = audience, "BFF token minted");
    Ok((
        Minted {
            header,
            token: token.into(),
        },
        exp,
    ))
}
