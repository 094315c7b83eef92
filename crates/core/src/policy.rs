//! Lifetimes and the refresh-token rotation rules.
use crate::model::{RefreshToken, Session};
use time::{Duration, OffsetDateTime};

/// Token-mode lifetimes (config `[access_token]` and `[refresh]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub access_ttl: Duration,
    /// Absolute lifetime of a refresh family, from login; rotation never extends it.
    pub refresh_ttl: Duration,
    /// Grace window for a repeat of the just-consumed token; zero = strict.
    pub reuse_interval: Duration,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            access_ttl: Duration::minutes(15),
            refresh_ttl: Duration::days(7),
            reuse_interval: Duration::ZERO,
        }
    }
}

impl TokenPolicy {
    /// An access token never outlives the session it belongs to.
    pub fn access_expiry(&self, session: &Session, now: OffsetDateTime) -> OffsetDateTime {
        (now + self.access_ttl).min(session.expires_at)
    }
}

/// Why a presented refresh token is refused without touching its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalReason {
    /// Issued to a different client: refused, family left alone.
    WrongClient,
    /// The family (session) was revoked.
    Revoked,
    /// The family is past its absolute lifetime.
    Expired,
}

impl RefusalReason {
    pub fn description(self) -> &'static str {
        match self {
            RefusalReason::WrongClient => "refresh token was issued to another client",
            RefusalReason::Revoked => "refresh token has been revoked",
            RefusalReason::Expired => "refresh token has expired",
        }
    }
}

/// What to do with a presented refresh token, decided from its stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presentation {
    /// Unconsumed and live: consume it and issue a successor (atomically, in the store).
    Rotate,
    /// A repeat of the immediate predecessor inside the grace window: hand out the same
    /// successor again (sealed under the predecessor).
    Replay {
        sealed_successor: Vec<u8>,
    },
    /// A consumed token presented again: it leaked. Revoke the whole family.
    Reuse,
    Refuse(RefusalReason),
}

/// The rotation rules, in order: client binding, family alive, then rotation state.
pub fn judge_presentation(
    token: &RefreshToken,
    session: &Session,
    client_id: &str,
    now: OffsetDateTime,
    policy: &TokenPolicy,
) -> Presentation {
    if token.client_id != client_id {
        return Presentation::Refuse(RefusalReason::WrongClient);
    }
    if session.is_revoked() {
        return Presentation::Refuse(RefusalReason::Revoked);
    }
    if now >= session.expires_at {
        return Presentation::Refuse(RefusalReason::Expired);
    }
    let Some(consumed_at) = token.consumed_at else {
        return Presentation::Rotate;
    };
    let within_grace = policy.reuse_interval > Duration::ZERO
        && now - consumed_at <= policy.reuse_interval
        && !token.successor_consumed;
    match (&token.sealed_successor, within_grace) {
        (Some(sealed), true) => Presentation::Replay {
            sealed_successor: sealed.clone(),
        },
        _ => Presentation::Reuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use crate::secret::Secret;

    fn at(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + secs).expect("valid")
    }

    fn session() -> Session {
        Session {
            id: SessionId::new(),
            user_id: UserId::new(),
            kind: SessionKind::Token,
            client_id: Some("spa".into()),
            scope: Some("read".into()),
            secret_hash: None,
            csrf_hash: None,
            created_at: at(0),
            last_seen_at: at(0),
            expires_at: at(1000),
            revoked_at: None,
            revoke_reason: None,
            user_agent: None,
            ip: None,
            epoch: 0,
            parent_id: None,
        }
    }

    fn token(s: &Session) -> RefreshToken {
        RefreshToken {
            hash: Secret::generate().hash(),
            session_id: s.id,
            client_id: "spa".into(),
            issued_at: at(0),
            consumed_at: None,
            sealed_successor: None,
            successor_consumed: false,
        }
    }

    fn grace(secs: i64) -> TokenPolicy {
        TokenPolicy {
            reuse_interval: Duration::seconds(secs),
            ..TokenPolicy::default()
        }
    }

    #[test]
    fn fresh_token_rotates() {
        let s = session();
        assert_eq!(
            judge_presentation(&token(&s), &s, "spa", at(10), &grace(0)),
            Presentation::Rotate
        );
    }

    #[test]
    fn other_client_is_refused_before_anything_else() {
        let s = session();
        let mut t = token(&s);
        t.consumed_at = Some(at(1));
        assert_eq!(
            judge_presentation(&t, &s, "other", at(10), &grace(0)),
            Presentation::Refuse(RefusalReason::WrongClient)
        );
    }

    #[test]
    fn revoked_or_expired_family_refuses() {
        let mut s = session();
        let t = token(&s);
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(1000), &grace(0)),
            Presentation::Refuse(RefusalReason::Expired)
        );
        s.revoked_at = Some(at(5));
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(10), &grace(0)),
            Presentation::Refuse(RefusalReason::Revoked)
        );
    }

    #[test]
    fn consumed_token_is_reuse_when_strict() {
        let s = session();
        let mut t = token(&s);
        t.consumed_at = Some(at(10));
        t.sealed_successor = Some(vec![1, 2, 3]);
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(10), &grace(0)),
            Presentation::Reuse
        );
    }

    #[test]
    fn grace_window_replays_only_the_immediate_predecessor_inside_the_window() {
        let s = session();
        let mut t = token(&s);
        t.consumed_at = Some(at(10));
        t.sealed_successor = Some(vec![7]);
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(15), &grace(5)),
            Presentation::Replay {
                sealed_successor: vec![7]
            }
        );
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(16), &grace(5)),
            Presentation::Reuse
        );
        t.successor_consumed = true;
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(11), &grace(5)),
            Presentation::Reuse
        );
        t.successor_consumed = false;
        t.sealed_successor = None;
        assert_eq!(
            judge_presentation(&t, &s, "spa", at(11), &grace(5)),
            Presentation::Reuse
        );
    }

    #[test]
    fn access_token_never_outlives_its_session() {
        let s = session();
        let p = TokenPolicy::default();
        assert_eq!(p.access_expiry(&s, at(0)), at(900));
        assert_eq!(p.access_expiry(&s, at(500)), at(1000));
    }
}
