//! Latchkey's signing keys, JWKS, RFC 9068 access tokens and OpenID Connect ID and logout
//! tokens.
//!
//! - [`SigningKey`]: an Ed25519, P-256 or RSA-2048 key, generated here and persisted by the
//!   store as PKCS#8 DER, identified by its `kid`.
//! - [`KeyRing`]: every key that may have signed a live token (all algorithms, all published
//!   in the [`JwkSet`]), the one that signs new access tokens (EdDSA or ES256) and at most one
//!   current key per further algorithm for ID and logout tokens ([`KeyRing::with_signers`],
//!   [`KeyRing::signing_key_for`]), so keys can rotate without cutting off tokens already
//!   issued.
//! - [`KeyRing::sign`] / [`KeyRing::verify`]: access tokens with header
//!   `{"alg","typ":"at+jwt","kid"}`. Verification is strict: the key named by `kid` fixes the
//!   algorithm, key-carrying headers are refused, and time comes from [`Validation::now`].
//!   An access token whose `kid` names an RS256 key is refused: RS256 keys only sign ID and
//!   logout tokens.
//! - [`KeyRing::sign_id_token`] / [`KeyRing::sign_logout_token`]: OIDC ID tokens (`typ: JWT`,
//!   [`IdTokenClaims`], [`at_hash`]) and Back-Channel Logout tokens (`typ: logout+jwt`,
//!   [`LogoutTokenClaims`]) with a chosen algorithm (RS256, EdDSA or ES256), and their strict
//!   verifiers ([`KeyRing::verify_id_token`], [`KeyRing::verify_logout_token`]).
//! - [`PublicKeySet`] / [`VerifyingKey`]: the same verification with public keys only, read
//!   from the published JWKS ([`PublicKeySet::from_jwks`]), for resource servers.
//!
//! Signatures come from aws-lc-rs directly; keys are parsed once and shared.
#![deny(clippy::unwrap_used)]

mod error;
mod jwk;
mod jwt;
mod key;
mod oidc;

pub use error::{ParseAlgorithmError, TokenError, VerifyError};
pub use jwk::{Jwk, JwkSet};
pub use jwt::{AccessTokenClaims, KeyRing, MAX_TOKEN_LEN, PublicKeySet, Validation, new_jti};
pub use key::{Algorithm, MAX_KID_LEN, SigningKey, VerifyingKey};
pub use oidc::{
    BACKCHANNEL_LOGOUT_EVENT, IdTokenClaims, IdTokenValidation, LogoutTokenClaims, at_hash,
};
