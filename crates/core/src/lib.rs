//! Latchkey's domain: users, sessions and refresh families, and the rules that govern them.
//!
//! Nothing here speaks HTTP or SQL. Time comes from an injected [`Clock`] so that every
//! time-based rule (expiry, grace windows) is testable without sleeping.
#![deny(clippy::unwrap_used)]

pub mod clock;
pub mod model;
pub mod policy;
pub mod role;
pub mod secret;
pub mod username;

pub use clock::{Clock, ManualClock, SystemClock};
pub use model::{
    AUTH_CODE_RETENTION, AuthCode, NewRefreshToken, RefreshToken, Revocation, RevocationEvent,
    RevokeReason, Session, SessionId, SessionKind, User, UserId,
};
pub use policy::{Presentation, RefusalReason, TokenPolicy, judge_presentation};
pub use role::{MAX_ROLES, RoleError, is_valid_role, normalize_roles, removes_any, stale_before};
pub use secret::{SealError, Secret, SecretHash, open_successor, seal_successor};
pub use username::{Username, UsernameError};
