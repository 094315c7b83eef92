//! Tokens minted by `KeyRing` verify in independent JOSE implementations using nothing but the
//! published JWKS text, which is what a resource server does.
//!
//! The JWK is read with `serde_json::Value` (never with this crate's `Jwk`), so a mistake in
//! our JWK encoding cannot cancel out against the same mistake in our own parser.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jwt_simple::prelude::{
    ECDSAP256PublicKeyLike as _, ES256PublicKey, Ed25519PublicKey, EdDSAPublicKeyLike as _,
    HashSet, JWTClaims, RS256PublicKey, RSAPublicKeyLike as _, VerificationOptions,
};
use latchkey_tokens::{
    AccessTokenClaims, Algorithm, IdTokenClaims, KeyRing, LogoutTokenClaims, SigningKey, at_hash,
    new_jti,
};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

const ISSUER: &str = "https://auth.example.test";

/// The non-registered claims, as jwt-simple hands them back.
#[derive(Deserialize, Debug)]
struct Extra {
    client_id: String,
    scope: String,
    sid: String,
}

/// jwt-simple and jsonwebtoken read the system clock, so these tokens use it too.
fn fresh_claims() -> AccessTokenClaims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "user-42".into(),
        aud: "api".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: new_jti(),
        client_id: "spa".into(),
        scope: "read write".into(),
        sid: "sess-7".into(),
        roles: Vec::new(),
    }
}

fn ring(alg: Algorithm) -> KeyRing {
    let key = SigningKey::generate(alg, OffsetDateTime::now_utc()).expect("key");
    let kid = key.kid().to_owned();
    KeyRing::new(vec![key], &kid).expect("ring")
}

/// The JWKS as a resource server sees it: JSON text.
fn jwks_text(ring: &KeyRing) -> String {
    serde_json::to_string(&ring.jwks()).expect("jwks json")
}

/// Picks the JWK for `kid` out of the JWKS text with plain JSON handling.
fn find_jwk(jwks_text: &str, kid: &str) -> Value {
    let jwks: Value = serde_json::from_str(jwks_text).expect("jwks parses");
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .expect("kid published")
}

fn b64_field(jwk: &Value, name: &str) -> Vec<u8> {
    let text = jwk[name].as_str().expect("string member");
    assert!(!text.contains('='), "{name} must be unpadded");
    URL_SAFE_NO_PAD.decode(text).expect("base64url")
}

/// The kid in the token header, read without this crate.
fn header_kid(token: &str) -> String {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    assert_eq!(header["typ"], "at+jwt");
    header["kid"].as_str().expect("kid").to_owned()
}

/// The same claims with `sub` changed, encoded as a payload segment.
fn tampered_payload(claims: &AccessTokenClaims) -> String {
    let mut evil = claims.clone();
    evil.sub = "admin".into();
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).expect("json"))
}

fn options(kid: &str) -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from(["api".to_owned()])),
        required_signature_type: Some("at+jwt".into()),
        required_key_id: Some(kid.into()),
        ..Default::default()
    }
}

fn assert_same_claims(got: &JWTClaims<Extra>, want: &AccessTokenClaims) {
    assert_eq!(got.issuer.as_deref(), Some(want.iss.as_str()));
    assert_eq!(got.subject.as_deref(), Some(want.sub.as_str()));
    assert_eq!(got.jwt_id.as_deref(), Some(want.jti.as_str()));
    let aud = got.audiences.clone().expect("aud").into_string();
    assert_eq!(aud.expect("a single audience"), want.aud);
    assert_eq!(got.expires_at.map(|t| t.as_secs() as i64), Some(want.exp));
    assert_eq!(got.issued_at.map(|t| t.as_secs() as i64), Some(want.iat));
    assert_eq!(
        got.invalid_before.map(|t| t.as_secs() as i64),
        Some(want.nbf)
    );
    assert_eq!(got.custom.client_id, want.client_id);
    assert_eq!(got.custom.scope, want.scope);
    assert_eq!(got.custom.sid, want.sid);
}

#[test]
fn eddsa_tokens_verify_with_jwt_simple() {
    let ring = ring(Algorithm::EdDSA);
    let claims = fresh_claims();
    let token = ring.sign(&claims).expect("sign");
    let text = jwks_text(&ring);

    let kid = header_kid(&token);
    let jwk = find_jwk(&text, &kid);
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");
    assert_eq!(jwk["use"], "sig");
    let x = b64_field(&jwk, "x");
    assert_eq!(x.len(), 32);
    let public = Ed25519PublicKey::from_bytes(&x).expect("Ed25519 public key");

    let verified = public
        .verify_token::<Extra>(&token, Some(options(&kid)))
        .expect("jwt-simple accepts the token");
    assert_same_claims(&verified, &claims);

    // Signed by another key: refused.
    let forged = self::ring(Algorithm::EdDSA).sign(&claims).expect("sign");
    assert!(public.verify_token::<Extra>(&forged, None).is_err());
    // Payload swapped: refused.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other_payload = tampered_payload(&claims);
    parts[1] = &other_payload;
    assert!(
        public
            .verify_token::<Extra>(&parts.join("."), None)
            .is_err()
    );
}

#[test]
fn es256_tokens_verify_with_jwt_simple() {
    let ring = ring(Algorithm::ES256);
    let claims = fresh_claims();
    let token = ring.sign(&claims).expect("sign");
    let text = jwks_text(&ring);

    let kid = header_kid(&token);
    let jwk = find_jwk(&text, &kid);
    assert_eq!(jwk["kty"], "EC");
    assert_eq!(jwk["crv"], "P-256");
    assert_eq!(jwk["alg"], "ES256");
    assert_eq!(jwk["use"], "sig");
    let (x, y) = (b64_field(&jwk, "x"), b64_field(&jwk, "y"));
    assert_eq!((x.len(), y.len()), (32, 32));
    let sec1: Vec<u8> = [&[0x04][..], &x, &y].concat();
    let public = ES256PublicKey::from_bytes(&sec1).expect("P-256 public key");

    let verified = public
        .verify_token::<Extra>(&token, Some(options(&kid)))
        .expect("jwt-simple accepts the token");
    assert_same_claims(&verified, &claims);

    let forged = self::ring(Algorithm::ES256).sign(&claims).expect("sign");
    assert!(public.verify_token::<Extra>(&forged, None).is_err());
    let mut parts: Vec<&str> = token.split('.').collect();
    let other_payload = tampered_payload(&claims);
    parts[1] = &other_payload;
    assert!(
        public
            .verify_token::<Extra>(&parts.join("."), None)
            .is_err()
    );
}

/// jsonwebtoken parses the JWKS with its own JWK type, a second consumer of our encoding.
#[test]
fn tokens_verify_with_jsonwebtoken_from_the_jwks() {
    for (alg, jose_alg) in [
        (Algorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA),
        (Algorithm::ES256, jsonwebtoken::Algorithm::ES256),
    ] {
        let ring = ring(alg);
        let claims = fresh_claims();
        let token = ring.sign(&claims).expect("sign");
        let jwks: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(&jwks_text(&ring)).expect("jsonwebtoken parses our JWKS");
        let kid = header_kid(&token);
        let jwk = jwks.find(&kid).expect("kid published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");

        let mut validation = jsonwebtoken::Validation::new(jose_alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&["api"]);
        validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 1;

        let data = jsonwebtoken::decode::<AccessTokenClaims>(&token, &key, &validation)
            .expect("jsonwebtoken accepts the token");
        assert_eq!(data.claims, claims);
        assert_eq!(data.header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));

        let forged = self::ring(alg).sign(&claims).expect("sign");
        assert!(jsonwebtoken::decode::<AccessTokenClaims>(&forged, &key, &validation).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// OpenID Connect: ID and logout tokens, above all RS256 (what every relying party supports)

const CLIENT: &str = "spa";

/// Access tokens with EdDSA; ID and logout tokens with RS256, EdDSA or ES256.
fn oidc_ring() -> KeyRing {
    let now = OffsetDateTime::now_utc();
    let keys: Vec<SigningKey> = Algorithm::ALL
        .into_iter()
        .map(|alg| SigningKey::generate(alg, now).expect("key"))
        .collect();
    let kids: Vec<&str> = keys.iter().map(SigningKey::kid).collect();
    KeyRing::with_signers(keys.clone(), kids[0], &kids[1..]).expect("ring")
}

fn id_claims(access_token: &str, alg: Algorithm) -> IdTokenClaims {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    IdTokenClaims {
        iss: ISSUER.into(),
        sub: "user-42".into(),
        aud: CLIENT.into(),
        exp: now + 900,
        iat: now,
        auth_time: now - 30,
        nonce: Some("n-0S6_WzA2Mj".into()),
        sid: "cookie-7".into(),
        at_hash: Some(at_hash(access_token, alg)),
        azp: None,
    }
}

/// The kid and typ of a token header, read without this crate.
fn header_kid_typ(token: &str) -> (String, String) {
    let header = token.split('.').next().expect("header");
    let header: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("json");
    (
        header["kid"].as_str().expect("kid").to_owned(),
        header["typ"].as_str().expect("typ").to_owned(),
    )
}

/// The ID token's own claims, as jwt-simple hands them back.
#[derive(Deserialize, Debug)]
struct IdExtra {
    auth_time: i64,
    sid: String,
    at_hash: String,
}

#[test]
fn rs256_id_tokens_verify_with_jwt_simple_from_the_jwks() {
    let ring = oidc_ring();
    let access_token = ring.sign(&fresh_claims()).expect("access token");
    let claims = id_claims(&access_token, Algorithm::RS256);
    let token = ring.sign_id_token(&claims, Algorithm::RS256).expect("sign");
    let text = jwks_text(&ring);

    let (kid, typ) = header_kid_typ(&token);
    assert_eq!(typ, "JWT");
    let jwk = find_jwk(&text, &kid);
    assert_eq!(jwk["kty"], "RSA");
    assert_eq!(jwk["alg"], "RS256");
    assert_eq!(jwk["use"], "sig");
    assert!(jwk.get("crv").is_none() && jwk.get("x").is_none());
    let (n, e) = (b64_field(&jwk, "n"), b64_field(&jwk, "e"));
    assert_eq!(n.len(), 256);
    assert_eq!(e, [1, 0, 1]);
    let public = RS256PublicKey::from_components(&n, &e).expect("RSA public key");

    let options = VerificationOptions {
        allowed_issuers: Some(HashSet::from([ISSUER.to_owned()])),
        allowed_audiences: Some(HashSet::from([CLIENT.to_owned()])),
        required_signature_type: Some("JWT".into()),
        required_key_id: Some(kid.clone()),
        required_nonce: Some("n-0S6_WzA2Mj".into()),
        ..Default::default()
    };
    let verified = public
        .verify_token::<IdExtra>(&token, Some(options))
        .expect("jwt-simple accepts the ID token");
    assert_eq!(verified.issuer.as_deref(), Some(ISSUER));
    assert_eq!(verified.subject.as_deref(), Some("user-42"));
    assert_eq!(verified.nonce.as_deref(), Some("n-0S6_WzA2Mj"));
    assert_eq!(verified.custom.auth_time, claims.auth_time);
    assert_eq!(verified.custom.sid, claims.sid);
    // at_hash recomputed here, from OIDC Core §3.1.3.6: the left 128 bits of SHA-256.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access_token.as_bytes());
    assert_eq!(
        verified.custom.at_hash,
        URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    );

    // Another RSA key's token: refused. A swapped payload: refused.
    let forged = oidc_ring()
        .sign_id_token(&claims, Algorithm::RS256)
        .expect("sign");
    assert!(public.verify_token::<IdExtra>(&forged, None).is_err());
    let mut evil = claims.clone();
    evil.sub = "admin".into();
    let evil = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&evil).expect("json"));
    let parts: Vec<&str> = token.split('.').collect();
    let swapped = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert!(public.verify_token::<IdExtra>(&swapped, None).is_err());
}

/// jsonwebtoken reads the mixed JWKS (OKP, EC and RSA keys) with its own JWK type and checks ID
/// and logout tokens of every algorithm.
#[test]
fn id_and_logout_tokens_verify_with_jsonwebtoken_from_the_jwks() {
    let ring = oidc_ring();
    let jwks: jsonwebtoken::jwk::JwkSet =
        serde_json::from_str(&jwks_text(&ring)).expect("jsonwebtoken parses our JWKS");
    assert_eq!(jwks.keys.len(), 3);
    for (alg, jose_alg) in [
        (Algorithm::RS256, jsonwebtoken::Algorithm::RS256),
        (Algorithm::EdDSA, jsonwebtoken::Algorithm::EdDSA),
        (Algorithm::ES256, jsonwebtoken::Algorithm::ES256),
    ] {
        let claims = id_claims("an-access-token", alg);
        let token = ring.sign_id_token(&claims, alg).expect("sign");
        let (kid, _) = header_kid_typ(&token);
        let jwk = jwks.find(&kid).expect("kid published");
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("decoding key");

        let mut validation = jsonwebtoken::Validation::new(jose_alg);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[CLIENT]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 1;
        let data = jsonwebtoken::decode::<IdTokenClaims>(&token, &key, &validation)
            .expect("jsonwebtoken accepts the ID token");
        assert_eq!(data.claims, claims);
        assert_eq!(data.header.typ.as_deref(), Some("JWT"));
        assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));

        let now = OffsetDateTime::now_utc().unix_timestamp();
        let logout = LogoutTokenClaims {
            iss: ISSUER.into(),
            sub: "user-42".into(),
            aud: CLIENT.into(),
            iat: now,
            exp: now + 120,
            jti: new_jti(),
            sid: "cookie-7".into(),
        };
        let token = ring.sign_logout_token(&logout, alg).expect("sign");
        let data = jsonwebtoken::decode::<Value>(&token, &key, &validation)
            .expect("jsonwebtoken accepts the logout token");
        assert_eq!(data.header.typ.as_deref(), Some("logout+jwt"));
        assert_eq!(
            data.claims["events"],
            serde_json::json!({"http://schemas.openid.net/event/backchannel-logout": {}})
        );
        assert_eq!(data.claims["sid"], "cookie-7");
        assert_eq!(data.claims["jti"], logout.jti.as_str());
        assert!(data.claims.get("nonce").is_none());

        // Signed by a key of another ring under the same algorithm: refused.
        let forged = oidc_ring().sign_id_token(&claims, alg).expect("sign");
        assert!(jsonwebtoken::decode::<IdTokenClaims>(&forged, &key, &validation).is_err());
    }
}
