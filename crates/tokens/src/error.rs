//! Error types. Verification errors are small `Copy` reasons: they never carry any part of the
//! presented token, so they are safe to log and to compare in tests.

use thiserror::Error;

use crate::key::Algorithm;

/// Failures while generating, loading or using a signing key, or assembling a key ring.
#[derive(Error, Debug)]
pub enum TokenError {
    /// The cryptographic library could not generate a key or random bytes.
    #[error("key generation failed")]
    KeyGeneration,
    /// Stored key bytes are not a valid PKCS#8 private key for the stated algorithm.
    /// (The bytes themselves are never part of the message.)
    #[error("stored private key is not a valid PKCS#8 {0} key")]
    InvalidPrivateKey(Algorithm),
    /// A key id must be 1 to 128 printable ASCII characters (no spaces).
    #[error("invalid key id {0:?}: expected 1 to 128 printable ASCII characters")]
    InvalidKeyId(String),
    /// The same key id appears twice in a key ring.
    #[error("duplicate key id {0:?} in key ring")]
    DuplicateKeyId(String),
    /// The key chosen to sign new tokens is not one of the ring's keys.
    #[error("signing key {0:?} is not in the key ring")]
    SigningKeyNotInRing(String),
    /// A published JWK is not one of the forms Latchkey publishes (Ed25519/EdDSA,
    /// P-256/ES256 or RSA/RS256, `use: "sig"`), its fields disagree, or it is not a valid
    /// public key.
    #[error("unusable JWK {kid:?}: {reason}")]
    InvalidJwk {
        /// The JWK's `kid` (at most 128 characters of it).
        kid: String,
        reason: &'static str,
    },
    /// The key chosen to sign access tokens has an algorithm access tokens never use (RS256):
    /// see [`Algorithm::signs_access_tokens`].
    #[error("a {0} key cannot sign access tokens (EdDSA or ES256 only)")]
    NotForAccessTokens(Algorithm),
    /// Two keys of the same algorithm were both chosen to sign new tokens.
    #[error("more than one signing key chosen for {0}")]
    DuplicateSigner(Algorithm),
    /// The key ring has no signing key of this algorithm (an ID or logout token was asked for
    /// with an algorithm whose current key was not given to [`crate::KeyRing::with_signers`]).
    #[error("no signing key for {0} in the key ring")]
    NoSigningKey(Algorithm),
    /// The signed token would exceed [`crate::MAX_TOKEN_LEN`] and so never verify.
    #[error("token would be {0} bytes, over the limit")]
    TokenTooLong(usize),
    /// Signing failed inside the cryptographic library.
    #[error("signing failed")]
    Signing,
    /// The claims could not be serialized to JSON.
    #[error("claims could not be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Why a presented token (access, ID or logout token) was refused.
///
/// Callers normally answer every variant the same way (401); the variants exist for logs,
/// metrics and tests.
#[derive(Error, Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// Longer than [`crate::MAX_TOKEN_LEN`]; refused before any parsing.
    #[error("token too long")]
    TooLong,
    /// Not three base64url segments of JSON objects, or a claim of the wrong JSON type.
    #[error("malformed token")]
    Malformed,
    /// `typ` is missing or is not the one of the expected kind of token: `at+jwt` for access
    /// tokens (RFC 9068 §4), `JWT` for ID tokens, `logout+jwt` for logout tokens. This is what
    /// keeps one kind of token from being accepted as another.
    #[error("wrong token type")]
    WrongType,
    /// A header parameter this service never emits and refuses to honour
    /// (`jwk`, `jku`, `x5u`, `x5c`, `crit`).
    #[error("unsupported header parameter {0:?}")]
    UnsupportedHeader(&'static str),
    /// `kid` is missing, not a string, empty or longer than 128 characters.
    #[error("missing or invalid key id")]
    InvalidKeyId,
    /// No key in the ring has this `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// The header `alg` is not the algorithm of the key named by `kid` (this covers `none` and
    /// HMAC), or, for an access token, `kid` names an RS256 key (which only signs ID and logout
    /// tokens).
    #[error("algorithm not accepted for this key")]
    WrongAlgorithm,
    /// The signature does not verify with the key named by `kid`.
    #[error("bad signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` or `iat` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not this issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain the required audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent (or `null`).
    #[error("missing claim {0:?}")]
    MissingClaim(&'static str),
    /// A claim this kind of token must not carry (e.g. `nonce` in a logout token), or one with
    /// a value of the wrong shape (e.g. `events` without the back-channel logout event).
    #[error("unexpected or invalid claim {0:?}")]
    InvalidClaim(&'static str),
    /// The ID token's `nonce` is not the one the relying party sent (or is missing).
    #[error("wrong nonce")]
    WrongNonce,
    /// The ID token's `at_hash` does not match the access token it came with (or is missing).
    #[error("at_hash does not match the access token")]
    WrongAtHash,
}

/// An algorithm name that is not `EdDSA`, `ES256` or `RS256`.
#[derive(Error, Debug, Clone, PartialEq, Eq)]
#[error("unknown algorithm {0:?}: expected \"EdDSA\", \"ES256\" or \"RS256\"")]
pub struct ParseAlgorithmError(pub String);
