//! RFC 9068 access tokens: signing with the ring's current key and strict verification.
//!
//! Verification is done here by hand rather than through a general JWT library, because the
//! rules are narrower than any library's defaults: the algorithm is fixed by the key the `kid`
//! names (never by the token), key-carrying and extension headers are refused outright, and
//! time comes from the caller's clock.

use std::sync::Arc;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer, Serialize, de::IgnoredAny};

use crate::{
    error::{TokenError, VerifyError},
    jwk::JwkSet,
    key::{Algorithm, MAX_KID_LEN, SigningKey, VerifyingKey},
};

/// Longest token accepted (bytes); checked before any decoding so that oversized input costs
/// nothing. Also enforced when signing, so an issued token is always accepted.
pub const MAX_TOKEN_LEN: usize = 8192;

/// The `typ` header of every access token (RFC 9068 §2.1).
pub(crate) const ACCESS_TOKEN_TYP: &str = "at+jwt";
/// The full media type form, which RFC 9068 §4 also accepts.
const ACCESS_TOKEN_MEDIA_TYPE: &str = "application/at+jwt";

/// The claims of a Latchkey access token (RFC 9068 §2.2 plus `sid`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AccessTokenClaims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The resource server the token is meant for. Tokens are issued with a single audience;
    /// on verification an array `aud` is reduced to the audience that matched.
    pub aud: String,
    /// Expiry, epoch seconds.
    pub exp: i64,
    /// Issue time, epoch seconds.
    pub iat: i64,
    /// Not before, epoch seconds; issued equal to `iat`. Optional on verification (then `iat`).
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    pub client_id: String,
    /// Space-separated scopes; may be empty.
    pub scope: String,
    /// The public id of the session (refresh family) the token belongs to.
    pub sid: String,
    /// The user's roles when the token was minted (RFC 9068 §7.2.1.1 `roles`), always issued,
    /// empty when none. A token without the claim (minted before roles existed) verifies with
    /// no roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// What a presented token must satisfy, with the clock injected so that expiry is testable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Exact `iss` required.
    pub issuer: String,
    /// `aud` must be (or, as an array, contain) this value; `None` accepts any audience.
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Current time, epoch seconds.
    pub now: i64,
}

impl Validation {
    /// Any audience, no leeway.
    pub fn new(issuer: impl Into<String>, now: i64) -> Self {
        Validation {
            issuer: issuer.into(),
            audience: None,
            leeway_secs: 0,
            now,
        }
    }
}

/// Random unique token id (`jti`): a UUID v4.
pub fn new_jti() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Every key that may have signed a live token (of any algorithm), plus the ones that sign new
/// tokens: one key signs access tokens, and at most one key per algorithm signs ID and logout
/// tokens ([`KeyRing::signing_key_for`]); the access-token key is the signer of its algorithm.
///
/// Cheap to clone: the keys are shared.
#[derive(Clone, Debug)]
pub struct KeyRing {
    inner: Arc<RingInner>,
}

#[derive(Debug)]
struct RingInner {
    keys: Vec<SigningKey>,
    /// Index into `keys` of the access-token signer, checked in [`KeyRing::with_signers`].
    signing: usize,
    /// Indexes into `keys` of the signer of each algorithm (`signing` among them), at most
    /// one per algorithm.
    signers: Vec<usize>,
}

impl KeyRing {
    /// `keys`: every key that may have signed a live token; `signing_kid`: the one that signs
    /// new access tokens (EdDSA or ES256). Fails if `signing_kid` is not among `keys`, if it
    /// is an RS256 key, or if two keys share a `kid`.
    pub fn new(keys: Vec<SigningKey>, signing_kid: &str) -> Result<Self, TokenError> {
        Self::with_signers(keys, signing_kid, &[])
    }

    /// Like [`KeyRing::new`], with more signing keys for ID and logout tokens:
    /// `other_signing_kids` names the current key of each further algorithm (e.g. the RS256
    /// key when `[id_token] algorithm = "RS256"`). At most one signer per algorithm, counting
    /// the access-token key (naming it again is allowed). Fails as `new` does, or if a kid is
    /// not among `keys` ([`TokenError::SigningKeyNotInRing`]) or two signers share an
    /// algorithm ([`TokenError::DuplicateSigner`]).
    pub fn with_signers(
        keys: Vec<SigningKey>,
        access_token_kid: &str,
        other_signing_kids: &[&str],
    ) -> Result<Self, TokenError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|earlier| earlier.kid() == key.kid()) {
                return Err(TokenError::DuplicateKeyId(key.kid().to_owned()));
            }
        }
        let position = |kid: &str| {
            keys.iter()
                .position(|key| key.kid() == kid)
                .ok_or_else(|| TokenError::SigningKeyNotInRing(kid.to_owned()))
        };
        let signing = position(access_token_kid)?;
        let access_alg = keys[signing].algorithm();
        if !access_alg.signs_access_tokens() {
            return Err(TokenError::NotForAccessTokens(access_alg));
        }
        let mut signers = vec![signing];
        for kid in other_signing_kids {
            let index = position(kid)?;
            if signers.contains(&index) {
                continue;
            }
            let alg = keys[index].algorithm();
            if signers.iter().any(|&i| keys[i].algorithm() == alg) {
                return Err(TokenError::DuplicateSigner(alg));
            }
            signers.push(index);
        }
        Ok(KeyRing {
            inner: Arc::new(RingInner {
                keys,
                signing,
                signers,
            }),
        })
    }

    /// The key that signs new access tokens.
    pub fn signing_key(&self) -> &SigningKey {
        &self.inner.keys[self.inner.signing]
    }

    /// The key that signs new ID and logout tokens with `alg`, if the ring has one: the
    /// access-token key for its own algorithm, else the one given to [`KeyRing::with_signers`].
    pub fn signing_key_for(&self, alg: Algorithm) -> Option<&SigningKey> {
        self.inner
            .signers
            .iter()
            .map(|&i| &self.inner.keys[i])
            .find(|key| key.algorithm() == alg)
    }

    /// The algorithms this ring can sign ID and logout tokens with (for discovery's
    /// `id_token_signing_alg_values_supported`).
    pub fn signing_algorithms(&self) -> Vec<Algorithm> {
        self.inner
            .signers
            .iter()
            .map(|&i| self.inner.keys[i].algorithm())
            .collect()
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.inner.keys
    }

    /// The public keys of the whole ring, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: self.inner.keys.iter().map(SigningKey::public_jwk).collect(),
        }
    }

    /// Signs `claims` with the signing key; header `{"alg","typ":"at+jwt","kid"}`.
    pub fn sign(&self, claims: &AccessTokenClaims) -> Result<String, TokenError> {
        let key = self.signing_key();
        sign_jws(key, key.header_b64(), claims)
    }

    /// The public keys of the whole ring, as a verification-only set.
    pub fn public_keys(&self) -> PublicKeySet {
        PublicKeySet {
            keys: self
                .inner
                .keys
                .iter()
                .map(SigningKey::verifying_key)
                .collect(),
        }
    }

    /// Verifies a presented access token and returns its claims.
    ///
    /// Checks, in order: length; three base64url segments; header (no `jwk`/`jku`/`x5u`/`x5c`/
    /// `crit`, `typ` = `at+jwt`, a `kid` of this ring, `alg` = that key's algorithm); signature;
    /// required claims; `iss`; `aud`; `exp`, `nbf`, `iat` against `validation.now`.
    pub fn verify(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<AccessTokenClaims, VerifyError> {
        verify_token(token, validation, |kid| self.find_key(kid))
    }

    /// The public half of the ring's key with this `kid`, compared exactly.
    pub(crate) fn find_key(&self, kid: &str) -> Option<&VerifyingKey> {
        self.inner
            .keys
            .iter()
            .find(|key| key.kid() == kid)
            .map(SigningKey::verifying_key_ref)
    }
}

/// A compact JWS: `header_b64` (already encoded), the JSON of `claims`, and `key`'s signature.
pub(crate) fn sign_jws(
    key: &SigningKey,
    header_b64: &str,
    claims: &impl Serialize,
) -> Result<String, TokenError> {
    let payload = serde_json::to_vec(claims)?;
    // An RS256 signature is 342 characters in base64url; the others are 86.
    let mut token = String::with_capacity(header_b64.len() + payload.len() * 4 / 3 + 352);
    token.push_str(header_b64);
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
    let signature = key.sign_raw(token.as_bytes())?;
    token.push('.');
    URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TokenTooLong(token.len()));
    }
    Ok(token)
}

/// Verification-only public keys, e.g. read from Latchkey's published JWKS by a resource
/// server. [`PublicKeySet::verify`] applies exactly the rules of [`KeyRing::verify`] (they share
/// the code); only the source of the keys differs.
///
/// Cheap to clone: the keys are shared.
#[derive(Clone, Debug, Default)]
pub struct PublicKeySet {
    keys: Arc<[VerifyingKey]>,
}

impl PublicKeySet {
    /// A set of keys; fails if two share a `kid`.
    pub fn new(keys: Vec<VerifyingKey>) -> Result<Self, TokenError> {
        for (i, key) in keys.iter().enumerate() {
            if keys[..i].iter().any(|earlier| earlier.kid() == key.kid()) {
                return Err(TokenError::DuplicateKeyId(key.kid().to_owned()));
            }
        }
        Ok(PublicKeySet { keys: keys.into() })
    }

    /// Reads a JWKS, strictly: every key must pass [`VerifyingKey::from_jwk`] and `kid`s must be
    /// unique. (A consumer that prefers to skip unusable keys can call `from_jwk` per key and
    /// then [`PublicKeySet::new`].)
    pub fn from_jwks(jwks: &JwkSet) -> Result<Self, TokenError> {
        let keys = jwks
            .keys
            .iter()
            .map(VerifyingKey::from_jwk)
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(keys)
    }

    pub fn keys(&self) -> &[VerifyingKey] {
        &self.keys
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The key with this `kid`, compared exactly.
    pub fn get(&self, kid: &str) -> Option<&VerifyingKey> {
        self.keys.iter().find(|key| key.kid() == kid)
    }

    /// Verifies a presented access token with these keys; the same checks, in the same order,
    /// as [`KeyRing::verify`]. [`VerifyError::UnknownKey`] means the header was otherwise
    /// acceptable but names no key of this set (a caller may refresh its JWKS and retry).
    pub fn verify(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<AccessTokenClaims, VerifyError> {
        verify_token(token, validation, |kid| self.get(kid))
    }
}

/// The access-token verification shared by [`KeyRing`] and [`PublicKeySet`]; `find_key` looks
/// a `kid` up among the caller's own keys (and does nothing else with it).
fn verify_token<'k>(
    token: &str,
    validation: &Validation,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<AccessTokenClaims, VerifyError> {
    let (_, payload) = verify_jws(token, TokenKind::Access, find_key)?;
    let claims: RawClaims = parse_json_object(&payload)?;
    claims.validate(validation)
}

/// The kinds of JWT Latchkey signs; each has its own `typ`, so that none is accepted as another.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum TokenKind {
    /// RFC 9068 access token, `typ: at+jwt`; EdDSA or ES256 keys only.
    Access,
    /// OIDC ID token, `typ: JWT`.
    Id,
    /// OIDC Back-Channel Logout token, `typ: logout+jwt`.
    Logout,
}

impl TokenKind {
    /// The `typ` this service puts in the header.
    pub(crate) const fn typ(self) -> &'static str {
        match self {
            TokenKind::Access => ACCESS_TOKEN_TYP,
            TokenKind::Id => "JWT",
            TokenKind::Logout => "logout+jwt",
        }
    }

    /// `typ` as presented: the short form or the full media type (RFC 7515 §4.1.9), compared
    /// case-insensitively as media types are.
    fn accepts_typ(self, typ: &str) -> bool {
        let full = match self {
            TokenKind::Access => ACCESS_TOKEN_MEDIA_TYPE,
            TokenKind::Id => "application/jwt",
            TokenKind::Logout => "application/logout+jwt",
        };
        typ.eq_ignore_ascii_case(self.typ()) || typ.eq_ignore_ascii_case(full)
    }
}

/// Checks everything up to and including the signature; returns the key that signed and the
/// decoded payload (not yet parsed).
pub(crate) fn verify_jws<'k>(
    token: &str,
    kind: TokenKind,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<(&'k VerifyingKey, Vec<u8>), VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLong);
    }
    let mut segments = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(VerifyError::Malformed);
    };
    // An unsigned token (`alg: none` style, empty signature) is malformed, whatever its header.
    if header_b64.is_empty() || payload_b64.is_empty() || signature_b64.is_empty() {
        return Err(VerifyError::Malformed);
    }

    let header: RawHeader = parse_json_object(&decode_segment(header_b64)?)?;
    let key = check_header(&header, kind, find_key)?;

    let signature = decode_segment(signature_b64)?;
    // The signing input is the token up to the second dot, exactly as received.
    let signing_input = &token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()];
    if !key.verify_raw(signing_input, &signature) {
        return Err(VerifyError::BadSignature);
    }

    Ok((key, decode_segment(payload_b64)?))
}

/// Header rules that apply before the signature is checked; returns the key to check it with.
fn check_header<'k>(
    header: &RawHeader,
    kind: TokenKind,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<&'k VerifyingKey, VerifyError> {
    // Parameters that would let the token bring or point to its own key, or demand
    // extensions we do not implement (RFC 7515 §4.1.11).
    for (present, name) in [
        (header.jwk.0, "jwk"),
        (header.jku.0, "jku"),
        (header.x5u.0, "x5u"),
        (header.x5c.0, "x5c"),
        (header.crit.0, "crit"),
    ] {
        if present {
            return Err(VerifyError::UnsupportedHeader(name));
        }
    }
    match header.typ.as_deref() {
        Some(typ) if kind.accepts_typ(typ) => {}
        _ => return Err(VerifyError::WrongType),
    }
    let kid = match header.kid.as_deref() {
        Some(kid) if !kid.is_empty() && kid.len() <= MAX_KID_LEN => kid,
        _ => return Err(VerifyError::InvalidKeyId),
    };
    // The kid is only ever compared with the caller's own ids.
    let key = find_key(kid).ok_or(VerifyError::UnknownKey)?;
    if header.alg.as_deref() != Some(key.algorithm().as_str()) {
        return Err(VerifyError::WrongAlgorithm);
    }
    // RS256 keys sign ID and logout tokens only: an access token naming one is never genuine.
    if kind == TokenKind::Access && !key.algorithm().signs_access_tokens() {
        return Err(VerifyError::WrongAlgorithm);
    }
    Ok(key)
}

/// Strict base64url: no padding, no stray characters, no non-zero trailing bits.
fn decode_segment(segment: &str) -> Result<Vec<u8>, VerifyError> {
    URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| VerifyError::Malformed)
}

/// Parses a JSON object. The first byte is checked because serde's derived structs would also
/// accept a JSON array, matching fields by position.
pub(crate) fn parse_json_object<T: for<'de> Deserialize<'de>>(
    json: &[u8],
) -> Result<T, VerifyError> {
    if json.first() != Some(&b'{') {
        return Err(VerifyError::Malformed);
    }
    serde_json::from_slice(json).map_err(|_| VerifyError::Malformed)
}

/// The protected header as presented. Derived deserialization also refuses duplicate names.
#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    #[serde(default)]
    jwk: Present,
    #[serde(default)]
    jku: Present,
    #[serde(default)]
    x5u: Present,
    #[serde(default)]
    x5c: Present,
    #[serde(default)]
    crit: Present,
}

/// Whether a header parameter appears at all, whatever its value (`null` included).
#[derive(Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer)?;
        Ok(Present(true))
    }
}

/// The payload as presented: every claim optional so that absence gets a precise error.
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    jti: Option<String>,
    client_id: Option<String>,
    scope: Option<String>,
    sid: Option<String>,
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// RFC 7519 §4.1.3: a single string or an array of strings.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

pub(crate) fn required<T>(value: Option<T>, name: &'static str) -> Result<T, VerifyError> {
    value.ok_or(VerifyError::MissingClaim(name))
}

/// Like [`required`], for identifiers where an empty string is as good as absent.
pub(crate) fn required_id(
    value: Option<String>,
    name: &'static str,
) -> Result<String, VerifyError> {
    value
        .filter(|v| !v.is_empty())
        .ok_or(VerifyError::MissingClaim(name))
}

impl RawClaims {
    fn validate(self, validation: &Validation) -> Result<AccessTokenClaims, VerifyError> {
        let iss = required(self.iss, "iss")?;
        let sub = required_id(self.sub, "sub")?;
        let aud = required(self.aud, "aud")?;
        let exp = required(self.exp, "exp")?;
        let iat = required(self.iat, "iat")?;
        let jti = required_id(self.jti, "jti")?;
        let client_id = required_id(self.client_id, "client_id")?;
        let scope = required(self.scope, "scope")?;
        let sid = required_id(self.sid, "sid")?;
        let nbf = self.nbf.unwrap_or(iat);

        if iss != validation.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let aud = aud.select(validation.audience.as_deref())?;
        check_lifetime(exp, nbf, iat, validation.now, validation.leeway_secs)?;

        Ok(AccessTokenClaims {
            iss,
            sub,
            aud,
            exp,
            iat,
            nbf,
            jti,
            client_id,
            scope,
            sid,
            roles: self.roles.unwrap_or_default(),
        })
    }
}

impl Audience {
    /// The audience that matched `want` (which a single or array `aud` must contain), or with
    /// no requirement the first one.
    pub(crate) fn select(self, want: Option<&str>) -> Result<String, VerifyError> {
        match (self, want) {
            (Audience::One(aud), Some(want)) if aud == want => Ok(aud),
            (Audience::Many(auds), Some(want)) if auds.iter().any(|a| a == want) => {
                Ok(want.to_owned())
            }
            (_, Some(_)) => Err(VerifyError::WrongAudience),
            (Audience::One(aud), None) => Ok(aud),
            (Audience::Many(auds), None) => auds
                .into_iter()
                .next()
                .ok_or(VerifyError::MissingClaim("aud")),
        }
    }

    /// How many audiences the claim names.
    pub(crate) fn len(&self) -> usize {
        match self {
            Audience::One(_) => 1,
            Audience::Many(auds) => auds.len(),
        }
    }
}

/// `exp` must be after `now - leeway`; `nbf` and `iat` not after `now + leeway`.
pub(crate) fn check_lifetime(
    exp: i64,
    nbf: i64,
    iat: i64,
    now: i64,
    leeway_secs: u64,
) -> Result<(), VerifyError> {
    let leeway = i64::try_from(leeway_secs).unwrap_or(i64::MAX);
    if exp <= now.saturating_sub(leeway) {
        return Err(VerifyError::Expired);
    }
    let latest_start = now.saturating_add(leeway);
    if nbf > latest_start || iat > latest_start {
        return Err(VerifyError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
