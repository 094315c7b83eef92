//! Per-instance throttles (GCRA via governor), keyed by IP, account or session, and failure
//! throttles (GCRA too) that count only failed attempts.
//!
//! GCRA refills continuously: a `10/min` bucket emptied by an attacker is usable again one
//! slot every 6 s, so a throttled account recovers seconds after the attack stops instead of
//! staying locked out (OWASP: throttle, don't lock).
use crate::config::{Rate, RateLimitConfig};
use crate::error::ApiError;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Counts failures only (GCRA, refilling continuously like [`Throttle`]): [`Self::check`]
/// looks without taking anything, [`Self::failed`] takes a slot. So a success never uses up
/// the budget, and neither does an attempt this throttle refused.
#[derive(Clone)]
pub struct FailureThrottle {
    /// `None` = unlimited.
    rule: Option<FailureRule>,
    /// Theoretical arrival time per key: when the bucket is full again.
    tat: Arc<Mutex<HashMap<String, Instant>>>,
    name: &'static str,
}

#[derive(Clone, Copy)]
struct FailureRule {
    /// One slot refills every `interval`.
    interval: Duration,
    /// Slots when full.
    burst: u32,
}

/// Keys kept before idle ones are swept on insert (a bound, not a working size).
const FAILURE_KEYS_MAX: usize = 100_000;

impl FailureThrottle {
    /// `rate` failures per period; `multiplier` scales the count (3 for the all-addresses
    /// budget of an account).
    pub fn new(name: &'static str, rate: Rate, multiplier: u32) -> Self {
        let rule = rate.per.and_then(|(n, period)| {
            let burst = n.checked_mul(multiplier).filter(|b| *b > 0)?;
            Some(FailureRule {
                interval: period / burst,
                burst,
            })
        });
        Self {
            rule,
            tat: Arc::new(Mutex::new(HashMap::new())),
            name,
        }
    }

    /// 429 (with the seconds until a slot frees up) while `key` has no failure left; takes
    /// nothing.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        let map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        self.check_in(&map, key)
    }

    fn check_in(&self, map: &HashMap<String, Instant>, key: &str) -> Result<(), ApiError> {
        let Some(rule) = self.rule else {
            return Ok(());
        };
        let now = Instant::now();
        let tat = map.get(key).copied();
        // Full bucket: tat <= now. Empty: tat >= now + burst * interval.
        let Some(tat) = tat else {
            return Ok(());
        };
        let free_from = tat
            .checked_sub(rule.interval * (rule.burst - 1))
            .unwrap_or(now);
        if free_from <= now {
            return Ok(());
        }
        let wait = free_from - now;
        let retry_after_secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        tracing::warn!(target: "latchkey::security", throttle = self.name, retry_after_secs, "rate limited");
        crate::metrics::rate_limited(self.name);
        Err(ApiError::RateLimited { retry_after_secs })
    }

    /// Takes one failure from `key`'s budget up front (429 when none is left), in the same
    /// lock as the check: attempts in flight at once are each counted, so concurrent guesses
    /// cannot overrun the budget while their password checks run. [`Self::refund`] gives it
    /// back when the attempt did not fail after all.
    pub fn charge(&self, key: &str) -> Result<(), ApiError> {
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        self.check_in(&map, key)?;
        self.failed_in(&mut map, key);
        Ok(())
    }

    /// Gives back a failure taken by [`Self::charge`].
    pub fn refund(&self, key: &str) {
        let Some(rule) = self.rule else {
            return;
        };
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tat) = map.get_mut(key) {
            *tat = tat.checked_sub(rule.interval).unwrap_or(now).max(now);
        }
    }

    /// Records one failure for `key`.
    pub fn failed(&self, key: &str) {
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        self.failed_in(&mut map, key);
    }

    fn failed_in(&self, map: &mut HashMap<String, Instant>, key: &str) {
        let Some(rule) = self.rule else {
            return;
        };
        let now = Instant::now();
        if map.len() >= FAILURE_KEYS_MAX && !map.contains_key(key) {
            map.retain(|_, tat| *tat > now);
            if map.len() >= FAILURE_KEYS_MAX {
                // Still full of live keys: forget the lot rather than grow without bound.
                map.clear();
            }
        }
        let tat = map.entry(key.to_string()).or_insert(now);
        *tat = (*tat).max(now) + rule.interval;
    }

    /// Forgets keys whose bucket is full again.
    pub fn shrink(&self) {
        let now = Instant::now();
        let mut map = self.tat.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, tat| *tat > now);
        map.shrink_to_fit();
    }
}

#[derive(Clone)]
pub struct Throttles {
    /// Failed logins (and wrong current passwords) per account and client address
    /// (`rate_limit.login_per_account`).
    pub login_per_account: FailureThrottle,
    /// Failed logins per account over all addresses: 3x `rate_limit.login_per_account`, so
    /// one address's guesses never lock the owner out elsewhere.
    pub login_per_account_all: FailureThrottle,
    pub login_per_ip: Throttle,
    pub token_per_ip: Throttle,
    /// Refreshes of one family, at the same rate as token requests per IP.
    pub refresh_per_session: Throttle,
}

impl Throttles {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            login_per_account: FailureThrottle::new(
                "login_per_account",
                config.login_per_account,
                1,
            ),
            login_per_account_all: FailureThrottle::new(
                "login_per_account_all",
                config.login_per_account,
                3,
            ),
            login_per_ip: Throttle::new("login_per_ip", config.login_per_ip),
            token_per_ip: Throttle::new("token_per_ip", config.token_per_ip),
            refresh_per_session: Throttle::new("refresh_per_session", config.token_per_ip),
        }
    }

    pub fn shrink(&self) {
        self.login_per_account.shrink();
        self.login_per_account_all.shrink();
        for t in [
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
    fn failure_throttles_count_failures_only() {
        let t = FailureThrottle::new(
            "t",
            Rate {
                per: Some((3, Duration::from_secs(60))),
            },
            1,
        );
        for _ in 0..10 {
            t.check("a").expect("looking takes nothing");
        }
        for _ in 0..3 {
            t.check("a").expect("within budget");
            t.failed("a");
        }
        match t.check("a") {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}")
            }
            other => panic!("expected 429, got {other:?}"),
        }
        t.check("b").expect("other keys unaffected");
        let all = FailureThrottle::new(
            "t",
            Rate {
                per: Some((3, Duration::from_secs(60))),
            },
            3,
        );
        for _ in 0..9 {
            all.check("a").expect("3x budget");
            all.failed("a");
        }
        assert!(all.check("a").is_err());
    }

    #[test]
    fn off_never_refuses() {
        let t = Throttle::new("t", Rate { per: None });
        for _ in 0..10_000 {
            t.check("a").expect("unlimited");
        }
    }
}
