//! The records Latchkey keeps: users, sessions (one concept for cookie and token mode) and the
//! refresh tokens of a token session's family.
use crate::secret::SecretHash;
use std::fmt;
use time::OffsetDateTime;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl Default for UserId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The public session id (`sid`): random, shown in lists, JWT claims and the feed. It opens nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub Uuid);

impl SessionId {
    /// Random (v4), so sids reveal neither creation order nor count.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    pub fn parse(text: &str) -> Option<Self> {
        Uuid::try_parse(text).ok().map(Self)
    }
}

impl Default for SessionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// Normalised form (see [`crate::Username`]); unique.
    pub username: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub banned_at: Option<OffsetDateTime>,
    /// The user's session epoch: advanced, in the same store step, by every ban, unban,
    /// password change and "revoke all", so a login that read the user before one of those
    /// cannot create a session after it, and sessions born before it are no longer admitted
    /// (DESIGN invariant 7; docs/decisions/0008).
    pub session_epoch: u64,
}

impl User {
    pub fn is_banned(&self) -> bool {
        self.banned_at.is_some()
    }

    /// Whether this user, as read now, still admits `session`: not banned, and the session
    /// was born (or re-stamped) at the user's current epoch. Sessions the user no longer
    /// admits are refused even if, for any reason, they were never marked revoked.
    pub fn admits(&self, session: &Session) -> bool {
        !self.is_banned() && session.user_id == self.id && session.epoch >= self.session_epoch
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    /// Stateful: an opaque secret in the `__Host-latchkey` cookie.
    Cookie,
    /// Stateless access tokens plus a rotating refresh-token family.
    Token,
}

impl SessionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionKind::Cookie => "cookie",
            SessionKind::Token => "token",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "cookie" => Some(SessionKind::Cookie),
            "token" => Some(SessionKind::Token),
            _ => None,
        }
    }
}

/// Why a session ended; recorded for audit and reported on the revocation feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    UserRevoked,
    ReuseDetected,
    PasswordChanged,
    Banned,
    Admin,
    /// A cookie session found past its idle timeout (recorded so it can never come back).
    IdleTimeout,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::UserRevoked => "user_revoked",
            RevokeReason::ReuseDetected => "reuse_detected",
            RevokeReason::PasswordChanged => "password_changed",
            RevokeReason::Banned => "banned",
            RevokeReason::Admin => "admin",
            RevokeReason::IdleTimeout => "idle_timeout",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "logout" => RevokeReason::Logout,
            "user_revoked" => RevokeReason::UserRevoked,
            "reuse_detected" => RevokeReason::ReuseDetected,
            "password_changed" => RevokeReason::PasswordChanged,
            "banned" => RevokeReason::Banned,
            "admin" => RevokeReason::Admin,
            "idle_timeout" => RevokeReason::IdleTimeout,
            _ => return None,
        })
    }
}

/// A revocation as the store applies it: why, when, and how long access tokens issued up to
/// now may live (so the revocation feed knows how long to keep the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    pub reason: RevokeReason,
    pub at: OffsetDateTime,
    pub access_ttl: time::Duration,
}

impl Revocation {
    /// When the last access token of `session` can expire: never after the session's end.
    pub fn feed_expiry(&self, session_expires_at: OffsetDateTime) -> OffsetDateTime {
        (self.at + self.access_ttl).min(session_expires_at)
    }
}

/// An entry of the revocation feed: session `sid` was revoked; its access tokens may be live
/// until `exp`. Cursors grow strictly and become visible in increasing order.
///
/// With `iat_before` set, the entry is narrower (a role was removed from the session's user,
/// docs/decisions/0011): only the tokens of `sid` issued before that whole second (`iat` less
/// than it) are stale; the session lives on and tokens minted since pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RevocationEvent {
    pub cursor: i64,
    pub sid: SessionId,
    pub exp: OffsetDateTime,
    pub iat_before: Option<OffsetDateTime>,
}

/// One login. Cookie sessions and token families are both sessions, listed and revoked alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub user_id: UserId,
    pub kind: SessionKind,
    /// Token mode: the OAuth client the family was issued to.
    pub client_id: Option<String>,
    /// Token mode: the scope granted at login; refreshes never widen it.
    pub scope: Option<String>,
    /// Cookie mode: SHA-256 of the cookie secret.
    pub secret_hash: Option<SecretHash>,
    /// Cookie mode: SHA-256 of the CSRF token.
    pub csrf_hash: Option<SecretHash>,
    pub created_at: OffsetDateTime,
    pub last_seen_at: OffsetDateTime,
    /// Absolute end: `refresh.ttl` (token) or `session.absolute_timeout` (cookie) after login.
    pub expires_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    pub revoke_reason: Option<RevokeReason>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The user's session epoch this session was born at: the one the login observed when it
    /// read the user, before verifying the password. Creation fails if the user's epoch has
    /// moved since; a session kept across "revoke others" or a password change is re-stamped
    /// with the new epoch in the same step.
    pub epoch: u64,
    /// Standard login: the cookie session that approved the authorization code this token
    /// session was issued for. Ending the parent ends its children, in the same store step
    /// where the backend allows. A child is created only while its parent is live.
    pub parent_id: Option<SessionId>,
}

impl Session {
    pub fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// Live = neither revoked nor past its absolute end.
    pub fn is_live(&self, now: OffsetDateTime) -> bool {
        !self.is_revoked() && now < self.expires_at
    }
}

/// A refresh token as stored: only its hash, its family (session) and its rotation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub hash: SecretHash,
    pub session_id: SessionId,
    pub client_id: String,
    pub issued_at: OffsetDateTime,
    /// Set once, atomically, by the one rotation that consumed it.
    pub consumed_at: Option<OffsetDateTime>,
    /// The successor, sealed under a key derived from this token (grace window only).
    pub sealed_successor: Option<Vec<u8>>,
    /// Whether this token's successor has itself been consumed (then this is not the
    /// immediate predecessor of the current token and gets no grace).
    pub successor_consumed: bool,
}

/// What a rotation writes: the successor token of the family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    pub hash: SecretHash,
    pub session_id: SessionId,
    pub client_id: String,
    pub issued_at: OffsetDateTime,
}

/// An authorization code as stored (only its hash) with everything it is bound to. Single use:
/// [`AuthCode::consumed_at`] is set once, atomically, by the one exchange that redeems it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub hash: SecretHash,
    pub client_id: String,
    pub redirect_uri: String,
    /// PKCE: the S256 `code_challenge`, when the request carried one.
    pub code_challenge: Option<String>,
    pub user_id: UserId,
    /// The cookie session (single sign-on session) that approved the code.
    pub session_id: SessionId,
    pub nonce: Option<String>,
    /// When the user authenticated (the cookie session's login).
    pub auth_time: OffsetDateTime,
    /// The granted scope (space-separated).
    pub scope: String,
    pub created_at: OffsetDateTime,
    /// At most 60 s after `created_at`.
    pub expires_at: OffsetDateTime,
    pub consumed_at: Option<OffsetDateTime>,
    /// The token session the one exchange created (so a replay can revoke it).
    pub issued_session: Option<SessionId>,
}

/// How long a used or expired code is kept so that a replay still finds (and revokes) the
/// session its first use created. `purge_expired` drops codes older than this past their end.
pub const AUTH_CODE_RETENTION: time::Duration = time::Duration::hours(1);
