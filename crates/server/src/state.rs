//! Shared application state: config, store, clock, keys, password hasher, throttles.
use crate::config::{ClientConfig, Config};
use crate::cookie::CookieSettings;
use crate::feed::Follower;
use crate::keys;
use crate::password::Passwords;
use crate::ratelimit::Throttles;
use crate::routes::admin::AdminGate;
use crate::routes::authorize::UsernameCache;
use latchkey_core::{Clock, Revocation, RevokeReason, Session, SessionId, TokenPolicy, UserId};
use latchkey_store::{EpochAdvanced, Store, StoreError, UserChange};
use latchkey_tokens::{KeyRing, TokenError};
use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, RwLock};

#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub issuer: String,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub policy: TokenPolicy,
    pub passwords: Passwords,
    pub throttles: Throttles,
    pub clients: HashMap<String, ClientConfig>,
    pub cookie: CookieSettings,
    pub allowed_origins: Vec<String>,
    /// `trusted_proxies`, parsed (see crate::net).
    pub trusted_proxies: crate::net::TrustedProxies,
    /// Cookie sessions record activity at most this often (not on every request).
    pub touch_interval: time::Duration,
    pub admin_gate: AdminGate,
    /// Start-up warnings (e.g. the cookie losing its __Host- prefix), logged by `serve`.
    pub warnings: Vec<String>,
    pub follower: Follower,
    /// Rate-limited logging of CSRF refusals.
    pub refusal_log: crate::caller::RefusalLog,
    pub usernames: UsernameCache,
    /// The Backend-for-Frontend proxy: routes, upstream client, token cache.
    pub bff: crate::bff::Bff,
    keyring: RwLock<Arc<KeyRing>>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("signing keys: {0}")]
    Keys(#[from] TokenError),
    #[error("{0}")]
    Other(String),
}

impl AppState {
    /// Builds the state, loading the signing keys from the store (generating the first one).
    pub async fn new(
        config: Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        crate::metrics::handle();
        let store: Arc<dyn Store> = Arc::new(crate::metrics::TimedStore(store));
        let keyring = keys::load_or_create(
            store.as_ref(),
            config.access_token.algorithm,
            config.id_token.algorithm,
            clock.now(),
        )
        .await?;
        let passwords =
            Passwords::new(&config.password).map_err(|e| StartError::Other(e.to_string()))?;
        let policy = TokenPolicy {
            access_ttl: config.access_token.ttl.as_time(),
            refresh_ttl: config.refresh.ttl.as_time(),
            reuse_interval: config.refresh.reuse_interval.as_time(),
        };
        let clients = config
            .clients
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
        let (cookie, cookie_warning) = CookieSettings::from_config(&config);
        let config_warnings = config.warnings();
        let idle = config.session.idle_timeout.as_time();
        let touch_interval = (idle / 10_i32).min(time::Duration::seconds(60));
        let config_allowed_origins = config.allowed_origins();
        let trusted_proxies = crate::net::TrustedProxies::new(&config.trusted_proxies);
        let bff = crate::bff::Bff::new(&config).map_err(StartError::Other)?;
        Ok(Self(Arc::new(Inner {
            issuer: config.issuer(),
            throttles: Throttles::new(&config.rate_limit),
            config,
            store,
            clock,
            policy,
            passwords,
            clients,
            cookie,
            allowed_origins: config_allowed_origins,
            trusted_proxies,
            touch_interval,
            admin_gate: AdminGate::default(),
            follower: Follower::default(),
            refusal_log: Default::default(),
            usernames: UsernameCache::default(),
            bff,
            warnings: cookie_warning.into_iter().chain(config_warnings).collect(),
            keyring: RwLock::new(Arc::new(keyring)),
        })))
    }

    /// A revocation happening now, for the store (and the revocation feed).
    pub fn revocation(&self, reason: RevokeReason) -> Revocation {
        Revocation {
            reason,
            at: self.clock.now(),
            access_ttl: self.policy.access_ttl,
        }
    }

    /// Revokes one session, durably, and updates this instance's revoked set before returning.
    pub async fn revoke_session(
        &self,
        id: SessionId,
        reason: RevokeReason,
    ) -> Result<bool, StoreError> {
        let revocation = self.revocation(reason);
        let revoked = self.store.revoke_session(id, &revocation).await?;
        crate::metrics::revoked(reason.as_str(), usize::from(revoked));
        if revoked {
            // Known here at once, even if reading the log back below fails.
            self.follower
                .note_local(id, revocation.at + revocation.access_ttl);
        }
        self.catch_up_feed().await;
        Ok(revoked)
    }

    /// Advances the user's session epoch in one store step: applies `change`, keeps `keep`
    /// (if it is a current session of the user), revokes every other session durably, then
    /// updates this instance's revoked set. Ban, unban, password change and "revoke all" all
    /// go through here, so a login or refresh racing them cannot outlive them (invariant 7).
    /// `None` when the user does not exist.
    pub async fn advance_user_epoch(
        &self,
        user: UserId,
        change: UserChange<'_>,
        keep: Option<SessionId>,
        reason: RevokeReason,
    ) -> Result<Option<EpochAdvanced>, StoreError> {
        let revocation = self.revocation(reason);
        let advanced = self
            .store
            .advance_user_epoch(user, change, keep, &revocation)
            .await?;
        if let Some(advanced) = &advanced {
            crate::metrics::revoked(reason.as_str(), advanced.revoked.len());
            for id in &advanced.revoked {
                self.follower
                    .note_local(*id, revocation.at + revocation.access_ttl);
            }
            self.catch_up_feed().await;
        }
        Ok(advanced)
    }

    /// Whether `session`'s user, read now, still admits it: the user exists, is not banned,
    /// and the session was born at the user's current epoch. Every use of a session checks
    /// this (refresh, cookie, Bearer on Latchkey's own endpoints), so a session the epoch has
    /// left behind is refused even if its revocation was never written.
    pub async fn admitted(&self, session: &Session) -> Result<bool, StoreError> {
        Ok(self
            .store
            .user_by_id(session.user_id)
            .await?
            .is_some_and(|user| user.admits(session)))
    }

    /// Reads the revocation log now; the periodic follower retries if this fails.
    async fn catch_up_feed(&self) {
        if let Err(e) = self.follower.poll_once(self).await {
            tracing::warn!(error = %e, "revocation recorded; reading the log back failed");
        }
    }

    /// The current key ring (cheap: an `Arc` clone).
    pub fn keyring(&self) -> Arc<KeyRing> {
        self.keyring
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_keyring(&self, ring: KeyRing) {
        *self.keyring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}
