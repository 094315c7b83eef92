//! Following Latchkey's revocation feed: `GET {feed}?after=<cursor>` answers
//! `{"cursor":N,"revoked":[{"sid","exp"}...]}`. The revoked sessions are kept, each until its
//! last access token has expired (plus the leeway), in a map that verification reads.
//!
//! An entry with `"iat_before":T` (a role was removed from the session's user) revokes only
//! the session's tokens issued before `T` (`iat < T`); tokens minted since carry the new roles
//! and pass. Such entries are kept apart, so a full revocation of the same session always wins.

use std::{
    collections::HashMap,
    sync::{
        PoisonError, RwLock,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

/// Largest feed page read (Latchkey sends at most 1000 events a page, under 100 KiB).
pub(crate) const MAX_FEED_BYTES: usize = 4 * 1024 * 1024;
/// Pages read one after the other in one poll before yielding to the next tick.
pub(crate) const MAX_PAGES_PER_POLL: usize = 64;
/// A `sid` longer than this is not Latchkey's; such events are ignored.
const MAX_SID_LEN: usize = 256;

/// One page of the feed.
#[derive(Deserialize)]
pub(crate) struct Page {
    pub cursor: i64,
    pub revoked: Vec<Event>,
}

/// A revoked session and when its last access token expires (epoch seconds); with
/// `iat_before`, only the tokens issued before that second are revoked.
#[derive(Deserialize)]
pub(crate) struct Event {
    pub sid: String,
    pub exp: i64,
    #[serde(default)]
    pub iat_before: Option<i64>,
}

/// The follower's state, shared with every verification.
pub(crate) struct Revocations {
    /// sid → exp of the session's last access token.
    revoked: RwLock<HashMap<String, i64>>,
    /// sid → (tokens with `iat` below this are stale, exp of the last such token).
    stale: RwLock<HashMap<String, (i64, i64)>>,
    /// The `cursor` to pass as `after` next time.
    cursor: AtomicI64,
    /// Nanoseconds after `epoch` of the last complete successful read, plus one; 0: never.
    last_success: AtomicU64,
    /// Epoch seconds of the last pruning of expired entries.
    last_prune: AtomicI64,
    epoch: Instant,
    /// Entries are kept until `exp + keep_after_exp`: the verifier's leeway plus a second.
    keep_after_exp: i64,
}

impl Revocations {
    pub(crate) fn new(leeway_secs: u64) -> Self {
        Revocations {
            revoked: RwLock::new(HashMap::new()),
            stale: RwLock::new(HashMap::new()),
            cursor: AtomicI64::new(0),
            last_success: AtomicU64::new(0),
            last_prune: AtomicI64::new(0),
            epoch: Instant::now(),
            keep_after_exp: i64::try_from(leeway_secs)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        }
    }

    pub(crate) fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    pub(crate) fn is_revoked(&self, sid: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(sid)
    }

    /// Whether a token of `sid` issued at `iat` is refused: the session was revoked, or a role
    /// was removed from its user after the token was minted.
    pub(crate) fn is_token_revoked(&self, sid: &str, iat: i64) -> bool {
        self.is_revoked(sid)
            || self
                .stale
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .get(sid)
                .is_some_and(|(before, _)| iat < *before)
    }

    pub(crate) fn len(&self) -> usize {
        self.revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Time since the last complete successful read, `None` before the first one.
    pub(crate) fn since_last_success(&self) -> Option<Duration> {
        match self.last_success.load(Ordering::Acquire) {
            0 => None,
            stamp => Some(
                self.epoch
                    .elapsed()
                    .saturating_sub(Duration::from_nanos(stamp - 1)),
            ),
        }
    }

    /// Read successfully within `max_staleness`.
    pub(crate) fn is_fresh(&self, max_staleness: Duration) -> bool {
        self.since_last_success()
            .is_some_and(|age| age <= max_staleness)
    }

    pub(crate) fn mark_success(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1);
        self.last_success.store(nanos + 1, Ordering::Release);
    }

    /// Records one page read after cursor `after`; returns whether the page had events.
    pub(crate) fn apply(&self, after: i64, page: Page, now: i64) -> bool {
        let had_events = !page.revoked.is_empty();
        if had_events {
            let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
            let mut stale = self.stale.write().unwrap_or_else(PoisonError::into_inner);
            for event in page.revoked {
                // Already past: every token of the session has expired, nothing to remember.
                if event.sid.is_empty()
                    || event.sid.len() > MAX_SID_LEN
                    || !self.worth_keeping(event.exp, now)
                {
                    continue;
                }
                match event.iat_before {
                    None => {
                        let exp = revoked.entry(event.sid).or_insert(event.exp);
                        *exp = (*exp).max(event.exp);
                    }
                    // A later removal covers every token an earlier one did.
                    Some(before) => {
                        let entry = stale.entry(event.sid).or_insert((before, event.exp));
                        entry.0 = entry.0.max(before);
                        entry.1 = entry.1.max(event.exp);
                    }
                }
            }
        }
        if page.cursor != after {
            if page.cursor < after {
                tracing::warn!(
                    after,
                    cursor = page.cursor,
                    "revocation feed cursor went backwards; following it"
                );
            }
            self.cursor.store(page.cursor, Ordering::Release);
        }
        self.prune(now);
        had_events
    }

    fn worth_keeping(&self, exp: i64, now: i64) -> bool {
        exp.saturating_add(self.keep_after_exp) > now
    }

    /// Forgets sessions whose tokens have all expired; at most once a second.
    fn prune(&self, now: i64) {
        if self.last_prune.swap(now, Ordering::AcqRel) == now {
            return;
        }
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        revoked.retain(|_, exp| exp.saturating_add(self.keep_after_exp) > now);
        drop(revoked);
        let mut stale = self.stale.write().unwrap_or_else(PoisonError::into_inner);
        stale.retain(|_, (_, exp)| exp.saturating_add(self.keep_after_exp) > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(cursor: i64, events: &[(&str, i64)]) -> Page {
        Page {
            cursor,
            revoked: events
                .iter()
                .map(|(sid, exp)| Event {
                    sid: (*sid).to_owned(),
                    exp: *exp,
                    iat_before: None,
                })
                .collect(),
        }
    }

    #[test]
    fn events_are_kept_until_exp_plus_leeway() {
        let r = Revocations::new(5);
        let now = 1_000;
        assert!(r.apply(
            0,
            page(3, &[("a", now + 10), ("b", now - 3), ("c", now - 6)]),
            now
        ));
        assert_eq!(r.cursor(), 3);
        assert!(r.is_revoked("a"));
        // Expired 3 s ago, but a 5 s leeway still accepts its tokens: kept.
        assert!(r.is_revoked("b"));
        // Expired beyond the leeway (and the extra second): never stored.
        assert!(!r.is_revoked("c"));
        assert!(!r.apply(3, page(3, &[]), now + 2));
        assert!(r.is_revoked("b"));
        r.apply(3, page(3, &[]), now + 3);
        assert!(!r.is_revoked("b"));
        assert!(r.is_revoked("a"));
        r.apply(3, page(3, &[]), now + 16);
        assert!(!r.is_revoked("a"));
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn later_exp_wins_and_junk_sids_are_ignored() {
        let r = Revocations::new(0);
        let long = "s".repeat(MAX_SID_LEN + 1);
        r.apply(
            0,
            page(1, &[("a", 2_000), ("", 2_000), (&long, 2_000)]),
            1_000,
        );
        r.apply(1, page(2, &[("a", 1_500)]), 1_000);
        assert_eq!(r.len(), 1);
        r.apply(2, page(2, &[]), 1_600);
        assert!(r.is_revoked("a"), "the later exp must be kept");
    }

    #[test]
    fn stale_entries_refuse_only_older_tokens_until_exp() {
        let r = Revocations::new(0);
        let body = br#"{"cursor":4,"revoked":[{"sid":"a","exp":1900,"iat_before":1000},{"sid":"a","exp":1800,"iat_before":990},{"sid":"b","exp":1900}]}"#;
        let first: Page = serde_json::from_slice(body).expect("page");
        assert!(r.apply(0, first, 1_000));
        assert!(r.is_token_revoked("a", 999), "minted before the change");
        assert!(!r.is_token_revoked("a", 1_000), "minted after the change");
        assert!(!r.is_revoked("a"), "the session itself is not revoked");
        assert!(
            r.is_token_revoked("b", 5_000),
            "a full revocation refuses every token"
        );
        assert!(!r.is_token_revoked("c", 0));
        // A later removal raises the bar.
        let body = br#"{"cursor":5,"revoked":[{"sid":"a","exp":1950,"iat_before":1200}]}"#;
        r.apply(4, serde_json::from_slice(body).expect("page"), 1_100);
        assert!(r.is_token_revoked("a", 1_100));
        assert!(!r.is_token_revoked("a", 1_200));
        // Forgotten once every token it could refuse has expired.
        r.apply(5, page(5, &[]), 1_951);
        assert!(!r.is_token_revoked("a", 1_100));
    }

    #[test]
    fn freshness() {
        let r = Revocations::new(0);
        assert!(!r.is_fresh(Duration::from_secs(3600)));
        assert_eq!(r.since_last_success(), None);
        r.mark_success();
        assert!(r.is_fresh(Duration::from_secs(1)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!r.is_fresh(Duration::from_millis(10)));
    }
}
