//! Health, readiness, RFC 8414 metadata and the JWKS.
use crate::harness::*;

#[tokio::test]
async fn health_and_readiness() {
    let app = TestApp::new().await;
    let r = app.get("/healthz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    let r = app.get("/readyz", &[]).await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ready"));
}

#[tokio::test]
async fn authorization_server_metadata() {
    let app = TestApp::new().await;
    let r = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.status, 200);
    let m = r.json();
    let issuer = "http://127.0.0.1:8080";
    assert_eq!(m["issuer"], issuer);
    assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(m["revocation_endpoint"], format!("{issuer}/oauth/revoke"));
    assert_eq!(
        m["introspection_endpoint"],
        format!("{issuer}/oauth/introspect")
    );
    assert_eq!(m["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
    let grants = m["grant_types_supported"].as_array().expect("array");
    assert!(grants.contains(&"password".into()) && grants.contains(&"refresh_token".into()));
    for key in [
        "token_endpoint_auth_methods_supported",
        "revocation_endpoint_auth_methods_supported",
    ] {
        let methods = m[key].as_array().expect(key);
        assert!(
            methods.contains(&"client_secret_basic".into())
                && methods.contains(&"client_secret_post".into())
        );
    }
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let app = TestApp::new().await;
    let r = app.get("/.well-known/jwks.json", &[]).await;
    assert_eq!(r.status, 200);
    let all = r.json()["keys"].as_array().expect("keys").clone();
    // The access-token key, and the ID-token key (RS256 by default).
    assert_eq!(all.len(), 2);
    assert!(all.iter().any(|k| k["alg"] == "RS256" && k["kty"] == "RSA"));
    let keys: Vec<_> = all.into_iter().filter(|k| k["alg"] == "EdDSA").collect();
    let k = &keys[0];
    assert_eq!(
        (
            k["kty"].as_str(),
            k["crv"].as_str(),
            k["alg"].as_str(),
            k["use"].as_str()
        ),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig"))
    );
    assert!(k.get("d").is_none(), "private key published!");
    let pair = app.login("erin").await;
    assert_eq!(jwt_part(&pair.access, 0)["kid"], k["kid"]);
}

#[tokio::test]
async fn es256_can_be_configured() {
    let mut config = test_config();
    config.access_token.algorithm = latchkey_tokens::Algorithm::ES256;
    let app = TestApp::with_config(config).await;
    let pair = app.login("frank").await;
    assert_eq!(jwt_part(&pair.access, 0)["alg"], "ES256");
    let keys = app.get("/.well-known/jwks.json", &[]).await.json();
    assert_eq!(keys["keys"][0]["kty"], "EC");
    assert_eq!(app.me(&pair.access).await.status, 200);
}

#[tokio::test]
async fn the_signing_key_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("k.db").display());
    let open = || async {
        std::sync::Arc::new(
            latchkey_store::SqliteStore::connect(&url)
                .await
                .expect("SQLite"),
        )
    };
    let first = TestApp::build(test_config(), open().await, None).await;
    let pair = first.login("gina").await;
    let jwks_before = first.get("/.well-known/jwks.json", &[]).await.json();
    drop(first);
    let second = TestApp::build(test_config(), open().await, None).await;
    assert_eq!(
        second.get("/.well-known/jwks.json", &[]).await.json(),
        jwks_before
    );
    assert_eq!(second.me(&pair.access).await.status, 200);
}
