//! An access token from /oauth/token verifies in a different JOSE implementation (jwt-simple)
//! using nothing but the JSON of /.well-known/jwks.json: what a resource server does.
use crate::harness::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jwt_simple::prelude::*;

fn jwk_for(app_jwks: &serde_json::Value, kid: &str) -> serde_json::Value {
    app_jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .expect("kid is published")
}

fn b64(jwk: &serde_json::Value, field: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(jwk[field].as_str().expect(field))
        .expect("base64url")
}

fn options() -> VerificationOptions {
    VerificationOptions {
        allowed_issuers: Some(HashSet::from_strings(&["http://127.0.0.1:8080"])),
        allowed_audiences: Some(HashSet::from_strings(&["api"])),
        ..Default::default()
    }
}

#[tokio::test]
async fn eddsa_access_token_verifies_with_jwt_simple_from_the_jwks() {
    let app = TestApp::new().await;
    let pair = app.login("alice").await;
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    let kid = jwt_part(&pair.access, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_string();
    let jwk = jwk_for(&jwks, &kid);
    assert_eq!(jwk["kty"], "OKP");
    let key = Ed25519PublicKey::from_bytes(&b64(&jwk, "x")).expect("Ed25519 key");
    let claims = key
        .verify_token::<serde_json::Value>(&pair.access, Some(options()))
        .expect("jwt-simple accepts the token");
    assert_eq!(claims.custom["client_id"], "spa");
    assert!(claims.custom["sid"].is_string());
    // A tampered payload fails in the other implementation too.
    let mut parts: Vec<&str> = pair.access.split('.').collect();
    let other = app.login("bob").await;
    let other_payload = other.access.split('.').nth(1).expect("payload").to_string();
    parts[1] = &other_payload;
    assert!(
        key.verify_token::<serde_json::Value>(&parts.join("."), Some(options()))
            .is_err()
    );
}

#[tokio::test]
async fn es256_access_token_verifies_with_jwt_simple_from_the_jwks() {
    let mut config = test_config();
    config.access_token.algorithm = latchkey_tokens::Algorithm::ES256;
    let app = TestApp::with_config(config).await;
    let pair = app.login("carol").await;
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    let kid = jwt_part(&pair.access, 0)["kid"]
        .as_str()
        .expect("kid")
        .to_string();
    let jwk = jwk_for(&jwks, &kid);
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    let mut sec1 = vec![0x04];
    sec1.extend(b64(&jwk, "x"));
    sec1.extend(b64(&jwk, "y"));
    let key = ES256PublicKey::from_bytes(&sec1).expect("P-256 key");
    key.verify_token::<serde_json::Value>(&pair.access, Some(options()))
        .expect("jwt-simple accepts the token");
}
