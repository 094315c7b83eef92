//! [`Verifier`]: the key set, the revoked sessions, and the background tasks that keep both
//! current.

use std::{
    fmt,
    sync::{
        Arc, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use latchkey_tokens::{PublicKeySet, Validation};

use crate::{
    Claims, TokenRejection,
    config::{Resolved, VerifierConfig},
    error::{Error, VerifyError},
    feed::{self, MAX_FEED_BYTES, MAX_PAGES_PER_POLL, Revocations},
    http_client::HttpClient,
    jwks::{self, MAX_JWKS_BYTES},
    layer::RequireAccessTokenLayer,
};

/// Verifies Latchkey access tokens locally and follows the revocation feed.
///
/// Cheap to clone: clones share the keys, the revoked set and the background tasks, which
/// stop once the last clone is dropped. Needs a Tokio runtime (the tasks run on it).
#[derive(Clone)]
pub struct Verifier {
    shared: Arc<Shared>,
}

struct Shared {
    config: Resolved,
    http: HttpClient,
    keys: RwLock<PublicKeySet>,
    /// Held while the JWKS is being fetched: one fetch at a time, and requests that found an
    /// unknown `kid` wait for the fetch in flight instead of starting another.
    jwks_fetch: tokio::sync::Mutex<()>,
    /// Milliseconds after `epoch` of the last JWKS fetch attempt, plus one; 0: never.
    jwks_last_attempt: AtomicU64,
    jwks_fetches: AtomicU64,
    revocations: Revocations,
    epoch: Instant,
}

/// A snapshot of a [`Verifier`]'s state, for health checks and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FeedStatus {
    /// The feed cursor reached.
    pub cursor: i64,
    /// Revoked sessions currently remembered.
    pub revoked_sessions: usize,
    /// Time since the feed was last read successfully (`None`: never).
    pub since_last_success: Option<Duration>,
    /// Whether verification currently fails closed (or would, without fail-open) because the
    /// feed is stale.
    pub stale: bool,
    /// Keys currently accepted.
    pub keys: usize,
    /// JWKS fetches since start (the first one included).
    pub jwks_fetches: u64,
}

impl Verifier {
    /// Checks the configuration, reads the JWKS and the revocation feed once, and starts
    /// following both in the background.
    ///
    /// Fails if the configuration is invalid, the JWKS cannot be read or has no usable key,
    /// or the first read of the feed fails (that last one is only logged when
    /// `fail_open_when_feed_stale` is set; otherwise tokens would be refused anyway).
    pub async fn start(config: VerifierConfig) -> Result<Verifier, Error> {
        let config = config.resolve()?;
        let tls = config.jwks_uri.scheme_str() == Some("https")
            || config.feed_uri(0)?.scheme_str() == Some("https");
        let http = HttpClient::new(config.http_timeout, tls)?;
        let shared = Arc::new(Shared {
            revocations: Revocations::new(config.leeway_secs),
            config,
            http,
            keys: RwLock::new(PublicKeySet::default()),
            jwks_fetch: tokio::sync::Mutex::new(()),
            jwks_last_attempt: AtomicU64::new(0),
            jwks_fetches: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        {
            let _fetching = shared.jwks_fetch.lock().await;
            shared.fetch_jwks().await?;
        }
        if let Err(error) = shared.poll_feed().await {
            if !shared.config.fail_open_when_feed_stale {
                return Err(error);
            }
            tracing::warn!(%error, "revocation feed unreadable at start; failing open as configured");
        }
        spawn_feed_follower(Arc::downgrade(&shared));
        spawn_jwks_refresher(Arc::downgrade(&shared));
        tracing::info!(
            issuer = %shared.config.issuer,
            audience = %shared.config.audience,
            keys = shared.keys().len(),
            revoked = shared.revocations.len(),
            "access token verifier started"
        );
        Ok(Verifier { shared })
    }

    /// Verifies an access token (the bare token, without `Bearer `) and returns its claims.
    ///
    /// Refuses, in this order: a token that fails the strict checks of
    /// [`latchkey_tokens::PublicKeySet::verify`] (after one JWKS refresh if its `kid` is
    /// unknown, rate-limited); a token whose session was revoked; and, unless configured to
    /// fail open, any token while the feed is stale ([`VerifyError::FeedStale`]).
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let claims = match self.shared.verify_with_current_keys(token) {
            Err(TokenRejection::UnknownKey) => {
                self.shared.refresh_for_unknown_kid().await;
                self.shared.verify_with_current_keys(token)?
            }
            other => other?,
        };
        self.shared.check_session(&claims)?;
        Ok(claims)
    }

    /// Whether this session is on the revoked list as read so far.
    pub fn is_revoked(&self, sid: &str) -> bool {
        self.shared.revocations.is_revoked(sid)
    }

    /// The state of the feed and the keys.
    pub fn status(&self) -> FeedStatus {
        let s = &self.shared;
        FeedStatus {
            cursor: s.revocations.cursor(),
            revoked_sessions: s.revocations.len(),
            since_last_success: s.revocations.since_last_success(),
            stale: !s.revocations.is_fresh(s.config.feed_max_staleness),
            keys: s.keys().len(),
            jwks_fetches: s.jwks_fetches.load(Ordering::Relaxed),
        }
    }

    /// Reads the JWKS now, whatever the rate limit (e.g. from an admin hook after a key
    /// rotation). The current keys stay if it fails.
    pub async fn refresh_keys(&self) -> Result<(), Error> {
        let _fetching = self.shared.jwks_fetch.lock().await;
        self.shared.fetch_jwks().await
    }

    /// A tower layer that requires a valid access token on every request (see
    /// [`RequireAccessTokenLayer`]).
    pub fn layer(&self) -> RequireAccessTokenLayer {
        RequireAccessTokenLayer::new(self.clone())
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.shared.config.issuer)
            .field("audience", &self.shared.config.audience)
            .field("status", &self.status())
            .finish()
    }
}

impl Shared {
    fn keys(&self) -> PublicKeySet {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn validation(&self) -> Validation {
        Validation {
            issuer: self.config.issuer.clone(),
            audience: Some(self.config.audience.clone()),
            leeway_secs: self.config.leeway_secs,
            now: now_epoch_secs(),
        }
    }

    fn verify_with_current_keys(&self, token: &str) -> Result<Claims, TokenRejection> {
        // Cheap refusals (length) first, before any allocation.
        if token.len() > latchkey_tokens::MAX_TOKEN_LEN {
            return Err(TokenRejection::TooLong);
        }
        let validation = self.validation();
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .verify(token, &validation)
    }

    fn check_session(&self, claims: &Claims) -> Result<(), VerifyError> {
        // Revoked, or older than a removal of one of its user's roles (docs/decisions/0011).
        if self.revocations.is_token_revoked(&claims.sid, claims.iat) {
            return Err(VerifyError::Revoked);
        }
        if !self.config.fail_open_when_feed_stale
            && !self.revocations.is_fresh(self.config.feed_max_staleness)
        {
            return Err(VerifyError::FeedStale);
        }
        Ok(())
    }

    fn millis_since_epoch(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Whether the rate limit allows another JWKS fetch now.
    fn jwks_fetch_allowed(&self) -> bool {
        match self.jwks_last_attempt.load(Ordering::Acquire) {
            0 => true,
            stamp => {
                let since = self.millis_since_epoch().saturating_sub(stamp - 1);
                u128::from(since) >= self.config.jwks_min_refresh_interval.as_millis()
            }
        }
    }

    /// After an unknown `kid`: fetch the JWKS if the rate limit allows, or wait for a fetch
    /// already in flight. Errors are logged; the caller just tries its token again.
    async fn refresh_for_unknown_kid(&self) {
        if !self.jwks_fetch_allowed() {
            // Whoever fetches holds the lock; waiting on it means the retry sees its result.
            drop(self.jwks_fetch.lock().await);
            return;
        }
        let _fetching = self.jwks_fetch.lock().await;
        if !self.jwks_fetch_allowed() {
            return;
        }
        tracing::debug!("unknown kid in an access token; reading the JWKS again");
        if let Err(error) = self.fetch_jwks().await {
            tracing::warn!(%error, "JWKS refresh failed; keeping the current keys");
        }
    }

    /// Fetches and installs the JWKS. Callers hold `jwks_fetch`.
    async fn fetch_jwks(&self) -> Result<(), Error> {
        self.jwks_last_attempt
            .store(self.millis_since_epoch() + 1, Ordering::Release);
        self.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let url = || self.config.jwks_uri.to_string();
        let body = self
            .http
            .get_json(self.config.jwks_uri.clone(), None, MAX_JWKS_BYTES)
            .await
            .map_err(|reason| Error::Fetch { url: url(), reason })?;
        let keys = jwks::parse(&body).map_err(|reason| Error::Jwks { url: url(), reason })?;
        let mut current = self.keys.write().unwrap_or_else(PoisonError::into_inner);
        if current
            .keys()
            .iter()
            .map(|k| k.kid())
            .ne(keys.keys().iter().map(|k| k.kid()))
        {
            let what = if current.is_empty() {
                "JWKS keys loaded"
            } else {
                "JWKS keys changed"
            };
            tracing::info!(
                kids = ?keys.keys().iter().map(|k| k.kid()).collect::<Vec<_>>(),
                "{what}"
            );
        }
        *current = keys;
        Ok(())
    }

    /// Reads the feed from the current cursor until it has nothing new (or a page limit), then
    /// records the successful read.
    async fn poll_feed(&self) -> Result<(), Error> {
        for _ in 0..MAX_PAGES_PER_POLL {
            let after = self.revocations.cursor();
            let uri = self.config.feed_uri(after)?;
            let url = || self.config.feed_base.clone();
            let body = self
                .http
                .get_json(uri, self.config.feed_auth.as_ref(), MAX_FEED_BYTES)
                .await
                .map_err(|reason| Error::Fetch { url: url(), reason })?;
            let page: feed::Page = serde_json::from_slice(&body).map_err(|e| Error::Feed {
                url: url(),
                reason: format!("expected {{\"cursor\":N,\"revoked\":[...]}} ({e})"),
            })?;
            let cursor = page.cursor;
            let had_events = self.revocations.apply(after, page, now_epoch_secs());
            if !had_events || cursor == after {
                break;
            }
        }
        self.revocations.mark_success();
        Ok(())
    }
}

/// Polls the feed every `feed_poll_interval`; after failures, backs off (doubling, up to a
/// second) and keeps trying. Ends when the last [`Verifier`] is dropped.
fn spawn_feed_follower(shared: Weak<Shared>) {
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let delay = {
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let interval = shared.config.feed_poll_interval;
                match shared.poll_feed().await {
                    Ok(()) => {
                        if failures > 0 {
                            tracing::info!(failures, "revocation feed readable again");
                        }
                        failures = 0;
                        interval
                    }
                    Err(error) => {
                        failures = failures.saturating_add(1);
                        if failures == 1 || failures % 60 == 0 {
                            tracing::warn!(
                                %error,
                                failures,
                                fail_open = shared.config.fail_open_when_feed_stale,
                                max_staleness = ?shared.config.feed_max_staleness,
                                "cannot read the revocation feed"
                            );
                        }
                        backoff(interval, failures)
                    }
                }
            };
            tokio::time::sleep(delay).await;
        }
    });
}

/// `interval`, doubled per consecutive failure, at most one second (or `interval` if longer).
fn backoff(interval: Duration, failures: u32) -> Duration {
    let cap = interval.max(Duration::from_secs(1));
    interval
        .saturating_mul(1u32 << failures.saturating_sub(1).min(10))
        .min(cap)
}

/// Re-reads the JWKS every `jwks_max_age`, so that retired keys stop being accepted.
fn spawn_jwks_refresher(shared: Weak<Shared>) {
    tokio::spawn(async move {
        loop {
            let max_age = match shared.upgrade() {
                Some(shared) => shared.config.jwks_max_age,
                None => return,
            };
            tokio::time::sleep(max_age).await;
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let _fetching = shared.jwks_fetch.lock().await;
            if let Err(error) = shared.fetch_jwks().await {
                tracing::warn!(%error, "periodic JWKS refresh failed; keeping the current keys");
            }
        }
    });
}

fn now_epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let ms = Duration::from_millis;
        assert_eq!(backoff(ms(250), 1), ms(250));
        assert_eq!(backoff(ms(250), 2), ms(500));
        assert_eq!(backoff(ms(250), 3), ms(1000));
        assert_eq!(backoff(ms(250), 30), ms(1000));
        assert_eq!(backoff(ms(2000), 5), ms(2000));
        assert_eq!(backoff(ms(10), u32::MAX), ms(1000));
    }
}
