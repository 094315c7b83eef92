//! Errors: [`Error`](enum@Error) when a [`crate::Verifier`] cannot start, [`VerifyError`] when a request is
//! refused. Neither ever contains any part of a presented token.

use http::StatusCode;
use thiserror::Error;

use crate::TokenRejection;

/// Why [`crate::Verifier::start`] failed.
#[derive(Error, Debug)]
pub enum Error {
    /// A configuration value is out of range or malformed; the message names the field.
    #[error("invalid verifier configuration: {0}")]
    Config(String),
    /// Latchkey could not be reached, or answered with an error status, a body over the
    /// size limit or too slowly.
    #[error("cannot fetch {url}: {reason}")]
    Fetch {
        /// The URL (never with credentials: the feed token travels in a header).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The JWKS was read but is not usable (not JSON of the right shape, or no usable key).
    #[error("JWKS at {url} is unusable: {reason}")]
    Jwks {
        /// The JWKS URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The revocation feed answered something other than `{"cursor":N,"revoked":[...]}`.
    #[error("revocation feed at {url} is unusable: {reason}")]
    Feed {
        /// The feed URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// HTTPS could not be set up (e.g. no root certificates could be loaded).
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// Why a request or token was refused.
///
/// Everything is a 401 except [`VerifyError::FeedStale`], which is a 503: the token may well
/// be good, but revocations cannot be vouched for right now.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// No `Authorization` header.
    #[error("no access token")]
    MissingToken,
    /// The `Authorization` header is not a single `Bearer <token>`, or is too long.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// The token itself was refused (signature, header, claims or lifetime).
    #[error("invalid access token: {0}")]
    InvalidToken(TokenRejection),
    /// The token's session has been revoked, or the token was minted before a role was removed
    /// from its user (a feed entry with `iat_before`): the client refreshes to get a current one.
    #[error("session revoked")]
    Revoked,
    /// The revocation feed could not be read for longer than the configured maximum
    /// staleness, and the verifier fails closed.
    #[error("revocation status unavailable")]
    FeedStale,
}

impl From<TokenRejection> for VerifyError {
    fn from(reason: TokenRejection) -> Self {
        VerifyError::InvalidToken(reason)
    }
}

impl VerifyError {
    /// 503 for [`VerifyError::FeedStale`], 401 for the rest.
    pub fn status(&self) -> StatusCode {
        match self {
            VerifyError::FeedStale => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The `error` code of Latchkey's error body: `unavailable` or `unauthorized`.
    pub fn code(&self) -> &'static str {
        match self {
            VerifyError::FeedStale => "unavailable",
            _ => "unauthorized",
        }
    }
}
