//! The revocation feed, server side: each instance follows the store's revocation log
//! (which every instance writes) and keeps the set of revoked sessions whose access tokens may
//! still be live. That set answers forward-auth checks without a store lookup, and new events
//! are pushed to Server-Sent-Event subscribers.
use crate::auth::OWN_LEEWAY_SECS;
use crate::state::AppState;
use latchkey_core::{RevocationEvent, SessionId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use tokio::sync::broadcast;

/// How often each instance reads new events from the store.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Past this without a successful read, local checks fail closed.
pub const MAX_STALENESS: Duration = Duration::from_secs(5);
/// Events per page, for the store and for `GET /v1/revocations`.
pub const PAGE: u32 = 1000;

pub struct Follower {
    revoked: RwLock<HashMap<SessionId, OffsetDateTime>>,
    /// Role removals (docs/decisions/0011): tokens of the session with `iat` before the first
    /// value (epoch seconds) are stale until the second.
    stale: RwLock<HashMap<SessionId, (i64, OffsetDateTime)>>,
    cursor: AtomicI64,
    last_ok: Mutex<Option<Instant>>,
    events: broadcast::Sender<RevocationEvent>,
}

impl Default for Follower {
    fn default() -> Self {
        Self {
            revoked: RwLock::new(HashMap::new()),
            stale: RwLock::new(HashMap::new()),
            cursor: AtomicI64::new(0),
            last_ok: Mutex::new(None),
            events: broadcast::channel(4096).0,
        }
    }
}

impl Follower {
    /// Whether `sid` was revoked (as far as this instance has read the log).
    pub fn is_revoked(&self, sid: &SessionId) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sid)
    }

    /// Whether a token of `sid` issued at `iat` (epoch seconds) is refused: its session was
    /// revoked, or a role was removed from its user after it was minted (docs/decisions/0011).
    pub fn is_token_revoked(&self, sid: &SessionId, iat: i64) -> bool {
        self.is_revoked(sid)
            || self
                .stale
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(sid)
                .is_some_and(|(before, _)| iat < *before)
    }

    /// True when the log was read successfully within [`MAX_STALENESS`].
    pub fn is_fresh(&self) -> bool {
        self.last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= MAX_STALENESS)
    }

    /// Records a revocation made by this instance at once, ahead of the next poll.
    pub fn note_local(&self, sid: SessionId, exp: OffsetDateTime) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sid, exp);
    }

    /// Records a role removal made by this instance at once, ahead of the next poll.
    pub fn note_local_stale(&self, sid: SessionId, iat_before: i64, exp: OffsetDateTime) {
        note_stale(
            &mut self.stale.write().unwrap_or_else(|p| p.into_inner()),
            sid,
            iat_before,
            exp,
        );
    }

    pub fn subscribe(&self) -> broadcast::Receiver<RevocationEvent> {
        self.events.subscribe()
    }

    /// Reads everything new from the store; returns how many events arrived.
    ///
    /// A revocation is remembered as long as a token of its session can still pass
    /// Latchkey's own check, which allows [`OWN_LEEWAY_SECS`] of clock skew past `exp`:
    /// forgetting it at `exp` would let a revoked token through again for that last second.
    pub async fn poll_once(&self, state: &AppState) -> Result<usize, latchkey_store::StoreError> {
        let now = state.clock.now();
        // Tokens are refused once `exp <= now - leeway`: keep every event with a later `exp`.
        let horizon = now - time::Duration::seconds(OWN_LEEWAY_SECS as i64);
        let mut total = 0;
        loop {
            let after = self.cursor.load(Ordering::SeqCst);
            let page = state.store.revocations_after(after, PAGE, horizon).await?;
            let n = page.len();
            {
                let mut revoked = self.revoked.write().unwrap_or_else(|p| p.into_inner());
                let mut stale = self.stale.write().unwrap_or_else(|p| p.into_inner());
                for event in &page {
                    match event.iat_before {
                        None => {
                            let exp = revoked.entry(event.sid).or_insert(event.exp);
                            *exp = (*exp).max(event.exp);
                        }
                        Some(before) => {
                            note_stale(&mut stale, event.sid, before.unix_timestamp(), event.exp)
                        }
                    }
                }
                revoked.retain(|_, exp| *exp > horizon);
                stale.retain(|_, (_, exp)| *exp > horizon);
            }
            for event in page.iter().copied() {
                // Two polls may overlap (the periodic one and one after a local revocation):
                // the cursor only ever moves forward.
                self.cursor.fetch_max(event.cursor, Ordering::SeqCst);
                // No subscribers is fine.
                let _ = self.events.send(event);
            }
            total += n;
            if n < PAGE as usize {
                break;
            }
        }
        *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Ok(total)
    }
}

/// Keeps, per session, the latest "stale before" second and the latest expiry: a later role
/// removal covers every token an earlier one did.
fn note_stale(
    stale: &mut HashMap<SessionId, (i64, OffsetDateTime)>,
    sid: SessionId,
    iat_before: i64,
    exp: OffsetDateTime,
) {
    let entry = stale.entry(sid).or_insert((iat_before, exp));
    entry.0 = entry.0.max(iat_before);
    entry.1 = entry.1.max(exp);
}

/// Follows the log for the life of the runtime.
pub fn spawn_follower(state: &AppState) {
    let state = state.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            match state.follower.poll_once(&state).await {
                Ok(_) if failing => {
                    failing = false;
                    tracing::info!("revocation log readable again");
                }
                Ok(_) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot read the revocation log; forward auth fails closed after 5 s");
                }
                Err(_) => {}
            }
        }
    });
}
