//! Latchkey's signing keys, JWKS and RFC 9068 access tokens.
//!
//! - [`SigningKey`]: an Ed25519 or P-256 key, generated here and persisted by the store as
//!   PKCS#8 DER, identified by a random `kid`.
//! - [`KeyRing`]: every key that may have signed a live token (all published in the
//!   [`JwkSet`]) and the one that signs new tokens, so keys can rotate without cutting off
//!   tokens already issued.
//! - [`KeyRing::sign`] / [`KeyRing::verify`]: access tokens with header
//!   `{"alg","typ":"at+jwt","kid"}`. Verification is strict: the key named by `kid` fixes the
//!   algorithm, key-carrying headers are refused, and time comes from [`Validation::now`].
//! - [`PublicKeySet`] / [`VerifyingKey`]: the same verification with public keys only, read
//!   from the published JWKS ([`PublicKeySet::from_jwks`]), for resource servers.
//!
//! Signatures come from aws-lc-rs directly; keys are parsed once and shared.
#![deny(clippy::unwrap_used)]

mod error;
mod jwk;
mod jwt;
mod key;

pub use error::{ParseAlgorithmError, TokenError, VerifyError};
pub use jwk::{Jwk, JwkSet};
pub use jwt::{AccessTokenClaims, KeyRing, MAX_TOKEN_LEN, PublicKeySet, Validation, new_jti};
pub use key::{Algorithm, MAX_KID_LEN, SigningKey, VerifyingKey};
