//! Verify Latchkey access tokens in a resource server, locally, and honour revocations within
//! a second.
//!
//! A [`Verifier`] holds Latchkey's public keys (read from its JWKS) and follows Latchkey's
//! revocation feed in a background task. [`Verifier::verify`] then needs no call to Latchkey:
//!
//! 1. the token is checked strictly by [`latchkey_tokens::PublicKeySet::verify`], the very code
//!    Latchkey itself uses (RFC 9068: `typ: at+jwt`, the algorithm fixed by the key the `kid`
//!    names, no `none`/HMAC, no `jwk`/`jku`/`x5u`/`x5c`/`crit`, exact `iss`, `aud`, `exp`/`nbf`/
//!    `iat` with a bounded leeway, every claim present, at most 8 KiB);
//! 2. a `kid` it does not know makes it re-read the JWKS (at most once per
//!    [`VerifierConfig::jwks_min_refresh_interval`]) and try once more, so key rotation needs no
//!    restart;
//! 3. a token whose session (`sid`) appears on the revocation feed is refused;
//! 4. if the feed has not been read successfully for [`VerifierConfig::feed_max_staleness`],
//!    every token is refused with [`VerifyError::FeedStale`] (fail closed), unless
//!    [`VerifierConfig::fail_open_when_feed_stale`] says otherwise.
//!
//! For HTTP services there is a tower layer, [`RequireAccessTokenLayer`], that answers 401
//! (or 503 while failing closed) with Latchkey's error body, and with the `axum` feature an
//! [`AccessToken`] extractor.
//!
//! ```no_run
//! # async fn run() -> Result<(), latchkey_verify::Error> {
//! use latchkey_verify::{Verifier, VerifierConfig};
//!
//! let verifier = Verifier::start(VerifierConfig::new("https://auth.example.com", "api")).await?;
//! # let token = "";
//! match verifier.verify(token).await {
//!     Ok(claims) => println!("hello {}", claims.sub),
//!     Err(why) => println!("refused: {why}"),
//! }
//! # Ok(()) }
//! ```
//!
//! Modules:
//! - [`config`]: [`VerifierConfig`] and its defaults;
//! - [`verifier`]: [`Verifier`], the cheap-clone handle;
//! - [`layer`]: the tower layer and the error responses;
//! - `extract` (feature `axum`): the [`AccessToken`] extractor;
//! - [`error`]: start-up errors ([`Error`]) and refusals ([`VerifyError`]).
//!
//! Features: `rustls` (HTTPS URLs, with aws-lc-rs and the system's roots), `axum`.
#![deny(clippy::unwrap_used)]
#![warn(missing_docs)]

pub mod config;
pub mod error;
#[cfg(feature = "axum")]
pub mod extract;
mod feed;
mod http_client;
mod jwks;
pub mod layer;
pub mod verifier;

pub use config::VerifierConfig;
pub use error::{Error, VerifyError};
#[cfg(feature = "axum")]
pub use extract::AccessToken;
pub use layer::{RequireAccessToken, RequireAccessTokenLayer};
pub use verifier::{FeedStatus, Verifier};

/// The claims of a verified access token (`sub`, `scope`, `sid`, `client_id`, ...).
pub use latchkey_tokens::AccessTokenClaims as Claims;
/// Longest token accepted, in bytes.
pub use latchkey_tokens::MAX_TOKEN_LEN;
/// Why the token itself was refused (inside [`VerifyError::InvalidToken`]).
pub use latchkey_tokens::VerifyError as TokenRejection;

/// Scope helpers for [`Claims`].
pub trait ClaimsExt {
    /// The granted scopes (`scope` split on spaces, empty entries skipped).
    fn scopes(&self) -> impl Iterator<Item = &str>;
    /// Whether `scope` was granted (exact match of one space-separated entry).
    fn has_scope(&self, scope: &str) -> bool;
}

impl ClaimsExt for Claims {
    fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }

    fn has_scope(&self, scope: &str) -> bool {
        !scope.is_empty() && self.scopes().any(|s| s == scope)
    }
}
