//! Per-instance throttles (GCRA via governor), keyed by IP, account or session.
//!
//! GCRA refills continuously: a `10/min` bucket emptied by an attacker is usable again one
//! slot every 6 s, so a throttled account recovers seconds after the attack stops instead of
//! staying locked out (OWASP: throttle, don't lock).
use crate::config::{Rate, RateLimitConfig};
use crate::error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;

#[derive(Clone)]
pub struct Throttle {
    limiter: Option<Arc<DefaultKeyedRateLimiter<String>>>,
    name: &'static str,
}

impl Throttle {
    pub fn new(name: &'static str, rate: Rate) -> Self {
        let limiter = rate.per.and_then(|(n, period)| {
            let n = NonZeroU32::new(n)?;
            let quota = Quota::with_period(period / n.get())?.allow_burst(n);
            Some(Arc::new(RateLimiter::keyed(quota)))
        });
        Self { limiter, name }
    }

    /// Takes one slot for `key`, or refuses with 429 and the seconds until a slot frees up.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::warn!(target: "latchkey::security", throttle = self.name, retry_after_secs, "rate limited");
            crate::metrics::rate_limited(self.name);
            ApiError::RateLimited { retry_after_secs: retry_after_secs.max(1) }
        })
    }

    /// Forgets idle keys so the maps stay small.
    pub fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[derive(Clone)]
pub struct Throttles {
    pub login_per_account: Throttle,
    pub login_per_ip: Throttle,
    pub token_per_ip: Throttle,
    /// Refreshes of one family, at the same rate as token requests per IP.
    pub refresh_per_session: Throttle,
}

impl Throttles {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            login_per_account: Throttle::new("login_per_account", config.login_per_account),
            login_per_ip: Throttle::new("login_per_ip", config.login_per_ip),
            token_per_ip: Throttle::new("token_per_ip", config.token_per_ip),
            refresh_per_session: Throttle::new("refresh_per_session", config.token_per_ip),
        }
    }

    pub fn shrink(&self) {
        for t in [
            &self.login_per_account,
            &self.login_per_ip,
            &self.token_per_ip,
            &self.refresh_per_session,
        ] {
            t.shrink();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refuses_past_the_burst_per_key() {
        let t = Throttle::new(
            "t",
            Rate {
                per: Some((3, Duration::from_secs(60))),
            },
        );
        for _ in 0..3 {
            t.check("a").expect("within burst");
        }
        match t.check("a") {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert!((1..=20).contains(&retry_after_secs))
            }
            other => panic!("expected 429, got {other:?}"),
        }
        t.check("b").expect("other keys unaffected");
    }

    #[test]
    fn off_never_refuses() {
        let t = Throttle::new("t", Rate { per: None });
        for _ in 0..10_000 {
            t.check("a").expect("unlimited");
        }
    }
}
