//! Optional short reuse of a checked cookie session (`bff.session_cache`, off by default).
//!
//! Off, every proxied request authenticates the cookie against the store
//! ([`crate::caller::authenticate_cookie`]), as cookie mode does. On, a session the store
//! confirmed is reused for at most the configured time (≤ 10 s), and only while
//! - this instance's revocation feed is fresh and does not list the session (a revocation on
//!   this instance is on it before the revoking request returns; one on another instance
//!   within the feed's poll interval, 100 ms),
//! - the session is within its absolute lifetime, and
//! - no activity needs recording yet (the idle-timeout bookkeeping stays exact).
//!
//! Otherwise the store is asked again. So the window in which a session changed *outside*
//! the revocation feed (e.g. a row deleted by hand) stays usable is bounded by the setting.
use crate::caller::authenticate_cookie;
use crate::error::ApiError;
use crate::state::AppState;
use latchkey_core::{Secret, SecretHash, Session};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::{Duration, OffsetDateTime};

/// Entries before the cache is emptied (a bound, not a working size).
const MAX_ENTRIES: usize = 200_000;

pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<SecretHash, (Arc<Session>, OffsetDateTime)>>,
}

impl SessionCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            ttl: Duration::try_from(ttl).unwrap_or(Duration::ZERO),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The live session of a presented cookie secret.
    pub async fn authenticate(
        &self,
        state: &AppState,
        secret: &Secret,
    ) -> Result<Arc<Session>, ApiError> {
        if self.ttl <= Duration::ZERO {
            return Ok(Arc::new(authenticate_cookie(state, secret).await?));
        }
        let hash = secret.hash();
        let now = state.clock.now();
        if let Some(session) = self.reusable(state, &hash, now) {
            return Ok(session);
        }
        let result = authenticate_cookie(state, secret).await;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(session) => {
                if entries.len() >= MAX_ENTRIES {
                    entries.retain(|_, (_, checked)| now - *checked < self.ttl);
                    if entries.len() >= MAX_ENTRIES {
                        entries.clear();
                    }
                }
                let session = Arc::new(session);
                entries.insert(hash, (session.clone(), now));
                Ok(session)
            }
            Err(e) => {
                entries.remove(&hash);
                Err(e)
            }
        }
    }

    fn reusable(
        &self,
        state: &AppState,
        hash: &SecretHash,
        now: OffsetDateTime,
    ) -> Option<Arc<Session>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (session, checked) = entries.get(hash)?;
        let reusable = now - *checked < self.ttl
            && now >= *checked
            && session.is_live(now)
            && now - session.last_seen_at < state.touch_interval
            && state.follower.is_fresh()
            && !state.follower.is_revoked(&session.id);
        reusable.then(|| session.clone())
    }
}
