//! OpenID Connect tokens: ID tokens (OIDC Core 1.0 §2, §3.1.3.6, §3.1.3.7) and OIDC
//! Back-Channel Logout 1.0 logout tokens (§2.4), signed by a [`KeyRing`] key of a chosen
//! algorithm and verified strictly (by the issuer itself, e.g. an `id_token_hint`, and by tests).
//!
//! Every kind of token Latchkey signs carries its own `typ`: `at+jwt` (access), `JWT` (ID),
//! `logout+jwt` (logout). Each verifier accepts only its own, so none can stand in for another,
//! even when one key signs several kinds. On top of that an ID token with an `events` claim and a
//! logout token with a `nonce` are refused (Back-Channel Logout §2.4, §2.6).

use aws_lc_rs::digest::{SHA256, SHA512, digest};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize, ser::SerializeMap as _};

use crate::{
    error::{TokenError, VerifyError},
    jwt::{
        Audience, KeyRing, PublicKeySet, TokenKind, Validation, check_lifetime, parse_json_object,
        required, required_id, sign_jws, verify_jws,
    },
    key::{Algorithm, VerifyingKey},
};

/// The event member every logout token's `events` claim carries (Back-Channel Logout §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// The claims of a Latchkey ID token (OIDC Core §2). Optional claims are left out of the token
/// when `None`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct IdTokenClaims {
    pub iss: String,
    /// The user id, as in access tokens.
    pub sub: String,
    /// The client id of the relying party. Issued as a single string; on verification an array
    /// `aud` is reduced to the client id that matched.
    pub aud: String,
    /// Expiry, epoch seconds.
    pub exp: i64,
    /// Issue time, epoch seconds.
    pub iat: i64,
    /// When the user last authenticated (the cookie session's login), epoch seconds.
    pub auth_time: i64,
    /// The `nonce` of the authorization request, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The cookie session that signed in (the `sid` of logout tokens, too).
    pub sid: String,
    /// [`at_hash`] of the access token issued with this ID token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    /// Authorized party: the client id (OIDC Core §2), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
}

/// What a presented ID token must satisfy (OIDC Core §3.1.3.7), with the clock injected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTokenValidation {
    /// Exact `iss` required.
    pub issuer: String,
    /// `Some`: `aud` must be (or, as an array, contain) this client id; with several audiences
    /// `azp` is required, and `azp`, when present, must be this client id. `None`: any
    /// audience (the first of an array is returned), for an `id_token_hint`, whose `aud` is
    /// what names the client at RP-initiated logout.
    pub client_id: Option<String>,
    /// `Some`: the token's `nonce` must be exactly this. `None`: `nonce` is not checked.
    pub nonce: Option<String>,
    /// `Some`: `at_hash` must be present and be [`at_hash`] of this access token (with the
    /// algorithm of the key that signed the ID token). `None`: `at_hash` is not checked.
    pub access_token: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway_secs: u64,
    /// Current time, epoch seconds.
    pub now: i64,
    /// Accept an expired token (everything else is still checked): for an `id_token_hint` at
    /// RP-initiated logout, which is often presented after the ID token expired.
    pub allow_expired: bool,
}

impl IdTokenValidation {
    /// No nonce or at_hash check, no leeway, expired tokens refused.
    pub fn new(issuer: impl Into<String>, client_id: impl Into<String>, now: i64) -> Self {
        IdTokenValidation {
            issuer: issuer.into(),
            client_id: Some(client_id.into()),
            nonce: None,
            access_token: None,
            leeway_secs: 0,
            now,
            allow_expired: false,
        }
    }
}

/// The claims of an OIDC Back-Channel Logout token (§2.4). Latchkey always sends both `sub` and
/// `sid`; `events` (with [`BACKCHANNEL_LOGOUT_EVENT`]) is added when signing and checked when
/// verifying, and there is never a `nonce`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutTokenClaims {
    pub iss: String,
    /// The user id.
    pub sub: String,
    /// The client id the token is sent to.
    pub aud: String,
    /// Issue time, epoch seconds.
    pub iat: i64,
    /// Expiry, epoch seconds (a short lifetime: the token is delivered at once, or retried).
    pub exp: i64,
    /// Unique token id, so a relying party can refuse a replay.
    pub jti: String,
    /// The cookie session that ended (the `sid` of the ID tokens it issued).
    pub sid: String,
}

/// The payload of a logout token, in the order it is written.
#[derive(Serialize)]
struct LogoutTokenPayload<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
    jti: &'a str,
    sid: &'a str,
    events: LogoutEvents,
}

/// `{"http://schemas.openid.net/event/backchannel-logout":{}}`.
struct LogoutEvents;

impl Serialize for LogoutEvents {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(BACKCHANNEL_LOGOUT_EVENT, &serde_json::Map::new())?;
        map.end()
    }
}

/// The `at_hash` of an access token (OIDC Core §3.1.3.6): base64url (no padding) of the left
/// half of the hash of the token's ASCII octets, the hash being the one of the ID token's
/// `alg`: SHA-256 for RS256 and ES256 (16 bytes, 22 characters). JWA names no hash for EdDSA;
/// for Ed25519 this uses SHA-512 (32 bytes, 43 characters), the hash Ed25519 itself uses (RFC
/// 8032 §5.1), as the OpenID Connect working group agreed (openid/connect issue 1125) and as
/// other implementations do (e.g. openidconnect-rs, zitadel/oidc).
pub fn at_hash(access_token: &str, alg: Algorithm) -> String {
    let hash = match alg {
        Algorithm::RS256 | Algorithm::ES256 => digest(&SHA256, access_token.as_bytes()),
        Algorithm::EdDSA => digest(&SHA512, access_token.as_bytes()),
    };
    let bytes = hash.as_ref();
    URL_SAFE_NO_PAD.encode(&bytes[..bytes.len() / 2])
}

impl KeyRing {
    /// Signs an ID token with the ring's current `alg` key ([`KeyRing::signing_key_for`]);
    /// header `{"alg","typ":"JWT","kid"}`. Fails with [`TokenError::NoSigningKey`] when the
    /// ring has no signer of `alg`. `claims.at_hash` is written as given: compute it with
    /// [`at_hash`] and the same `alg`.
    pub fn sign_id_token(
        &self,
        claims: &IdTokenClaims,
        alg: Algorithm,
    ) -> Result<String, TokenError> {
        let key = self
            .signing_key_for(alg)
            .ok_or(TokenError::NoSigningKey(alg))?;
        sign_jws(key, &key.header_b64_with_typ(TokenKind::Id.typ())?, claims)
    }

    /// Signs a Back-Channel Logout token with the ring's current `alg` key; header
    /// `{"alg","typ":"logout+jwt","kid"}`, claims as [`LogoutTokenClaims`] plus `events`.
    pub fn sign_logout_token(
        &self,
        claims: &LogoutTokenClaims,
        alg: Algorithm,
    ) -> Result<String, TokenError> {
        let key = self
            .signing_key_for(alg)
            .ok_or(TokenError::NoSigningKey(alg))?;
        let payload = LogoutTokenPayload {
            iss: &claims.iss,
            sub: &claims.sub,
            aud: &claims.aud,
            iat: claims.iat,
            exp: claims.exp,
            jti: &claims.jti,
            sid: &claims.sid,
            events: LogoutEvents,
        };
        sign_jws(
            key,
            &key.header_b64_with_typ(TokenKind::Logout.typ())?,
            &payload,
        )
    }

    /// Verifies an ID token signed by any key of the ring (any algorithm; the key named by
    /// `kid` fixes it): `typ` `JWT`, then the claims as [`IdTokenValidation`] says.
    pub fn verify_id_token(
        &self,
        token: &str,
        validation: &IdTokenValidation,
    ) -> Result<IdTokenClaims, VerifyError> {
        verify_id_token(token, validation, |kid| self.find_key(kid))
    }

    /// Verifies a logout token signed by any key of the ring: `typ` `logout+jwt`, `iss`,
    /// `aud` (`validation.audience`, the client id), `iat`, `exp`, `jti`, `sub`, `sid`, the
    /// back-channel logout event, and no `nonce`.
    pub fn verify_logout_token(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<LogoutTokenClaims, VerifyError> {
        verify_logout_token(token, validation, |kid| self.find_key(kid))
    }
}

impl PublicKeySet {
    /// [`KeyRing::verify_id_token`] with public keys only (e.g. read from the JWKS).
    pub fn verify_id_token(
        &self,
        token: &str,
        validation: &IdTokenValidation,
    ) -> Result<IdTokenClaims, VerifyError> {
        verify_id_token(token, validation, |kid| self.get(kid))
    }

    /// [`KeyRing::verify_logout_token`] with public keys only (e.g. read from the JWKS).
    pub fn verify_logout_token(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<LogoutTokenClaims, VerifyError> {
        verify_logout_token(token, validation, |kid| self.get(kid))
    }
}

fn verify_id_token<'k>(
    token: &str,
    validation: &IdTokenValidation,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<IdTokenClaims, VerifyError> {
    let (key, payload) = verify_jws(token, TokenKind::Id, find_key)?;
    let raw: RawIdClaims = parse_json_object(&payload)?;
    raw.validate(validation, key.algorithm())
}

fn verify_logout_token<'k>(
    token: &str,
    validation: &Validation,
    find_key: impl FnOnce(&str) -> Option<&'k VerifyingKey>,
) -> Result<LogoutTokenClaims, VerifyError> {
    let (_, payload) = verify_jws(token, TokenKind::Logout, find_key)?;
    let raw: RawLogoutClaims = parse_json_object(&payload)?;
    raw.validate(validation)
}

/// An ID token payload as presented; every claim optional so absence gets a precise error.
#[derive(Deserialize)]
struct RawIdClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    iat: Option<i64>,
    nbf: Option<i64>,
    auth_time: Option<i64>,
    nonce: Option<String>,
    sid: Option<String>,
    at_hash: Option<String>,
    azp: Option<String>,
    /// Only logout tokens carry `events`.
    events: Option<serde::de::IgnoredAny>,
}

impl RawIdClaims {
    fn validate(
        self,
        validation: &IdTokenValidation,
        alg: Algorithm,
    ) -> Result<IdTokenClaims, VerifyError> {
        if self.events.is_some() {
            return Err(VerifyError::InvalidClaim("events"));
        }
        let iss = required(self.iss, "iss")?;
        let sub = required_id(self.sub, "sub")?;
        let aud = required(self.aud, "aud")?;
        let exp = required(self.exp, "exp")?;
        let iat = required(self.iat, "iat")?;
        let auth_time = required(self.auth_time, "auth_time")?;
        let sid = required_id(self.sid, "sid")?;

        if iss != validation.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let several_audiences = aud.len() > 1;
        let aud = aud.select(validation.client_id.as_deref())?;
        if let Some(client_id) = &validation.client_id {
            match self.azp.as_deref() {
                Some(azp) if azp != client_id => return Err(VerifyError::WrongAudience),
                None if several_audiences => return Err(VerifyError::MissingClaim("azp")),
                _ => {}
            }
        }
        let exp_checked = if validation.allow_expired {
            i64::MAX
        } else {
            exp
        };
        check_lifetime(
            exp_checked,
            self.nbf.unwrap_or(iat),
            iat,
            validation.now,
            validation.leeway_secs,
        )?;
        if validation
            .nonce
            .as_ref()
            .is_some_and(|want| self.nonce.as_ref() != Some(want))
        {
            return Err(VerifyError::WrongNonce);
        }
        if validation
            .access_token
            .as_deref()
            .is_some_and(|access_token| {
                self.at_hash.as_deref() != Some(at_hash(access_token, alg).as_str())
            })
        {
            return Err(VerifyError::WrongAtHash);
        }
        Ok(IdTokenClaims {
            iss,
            sub,
            aud,
            exp,
            iat,
            auth_time,
            nonce: self.nonce,
            sid,
            at_hash: self.at_hash,
            azp: self.azp,
        })
    }
}

/// A logout token payload as presented.
#[derive(Deserialize)]
struct RawLogoutClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    iat: Option<i64>,
    exp: Option<i64>,
    jti: Option<String>,
    sid: Option<String>,
    events: Option<serde_json::Map<String, serde_json::Value>>,
    /// Forbidden (§2.4), so a logout token can never pass for an ID token.
    nonce: Option<serde::de::IgnoredAny>,
}

impl RawLogoutClaims {
    fn validate(self, validation: &Validation) -> Result<LogoutTokenClaims, VerifyError> {
        if self.nonce.is_some() {
            return Err(VerifyError::InvalidClaim("nonce"));
        }
        let events = required(self.events, "events")?;
        if !events
            .get(BACKCHANNEL_LOGOUT_EVENT)
            .is_some_and(serde_json::Value::is_object)
        {
            return Err(VerifyError::InvalidClaim("events"));
        }
        let iss = required(self.iss, "iss")?;
        let sub = required_id(self.sub, "sub")?;
        let aud = required(self.aud, "aud")?;
        let iat = required(self.iat, "iat")?;
        let exp = required(self.exp, "exp")?;
        let jti = required_id(self.jti, "jti")?;
        let sid = required_id(self.sid, "sid")?;

        if iss != validation.issuer {
            return Err(VerifyError::WrongIssuer);
        }
        let aud = aud.select(validation.audience.as_deref())?;
        check_lifetime(exp, iat, iat, validation.now, validation.leeway_secs)?;
        Ok(LogoutTokenClaims {
            iss,
            sub,
            aud,
            iat,
            exp,
            jti,
            sid,
        })
    }
}

#[cfg(test)]
mod tests;
