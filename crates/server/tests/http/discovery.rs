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

#[tokio::test]
async fn openid_configuration_has_exactly_the_documented_members() {
    let app = TestApp::new().await;
    let r = app.get("/.well-known/openid-configuration", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    let m = r.json();
    let mut keys: Vec<&str> = m
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    let mut expected = vec![
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "response_types_supported",
        "grant_types_supported",
        "subject_types_supported",
        "id_token_signing_alg_values_supported",
        "code_challenge_methods_supported",
        "scopes_supported",
        "claims_supported",
        "token_endpoint_auth_methods_supported",
        "authorization_response_iss_parameter_supported",
        "backchannel_logout_supported",
        "backchannel_logout_session_supported",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);

    let issuer = "http://127.0.0.1:8080";
    for (key, path) in [
        ("authorization_endpoint", "/oauth/authorize"),
        ("token_endpoint", "/oauth/token"),
        ("userinfo_endpoint", "/oauth/userinfo"),
        ("jwks_uri", "/.well-known/jwks.json"),
        ("end_session_endpoint", "/oauth/logout"),
        ("revocation_endpoint", "/oauth/revoke"),
        ("introspection_endpoint", "/oauth/introspect"),
    ] {
        assert_eq!(m[key], format!("{issuer}{path}"), "{key}");
    }
    assert_eq!(m["issuer"], issuer);
    assert_eq!(m["response_types_supported"], serde_json::json!(["code"]));
    assert_eq!(
        m["grant_types_supported"],
        serde_json::json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password"
        ])
    );
    assert_eq!(m["subject_types_supported"], serde_json::json!(["public"]));
    // The configured algorithm (RS256 by default) first.
    assert_eq!(
        m["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    assert_eq!(
        m["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    // openid and profile first, then every client's API scopes, once each.
    assert_eq!(
        m["scopes_supported"],
        serde_json::json!(["openid", "profile", "read", "write"])
    );
    let claims = m["claims_supported"].as_array().expect("claims");
    for claim in [
        "sub",
        "iss",
        "aud",
        "exp",
        "iat",
        "auth_time",
        "nonce",
        "sid",
        "preferred_username",
    ] {
        assert!(claims.contains(&claim.into()), "{claim}");
    }
    assert_eq!(
        m["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "none"])
    );
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    // No back-channel logout delivery yet.
    assert_eq!(m["backchannel_logout_supported"], false);
    assert_eq!(m["backchannel_logout_session_supported"], false);
}

#[tokio::test]
async fn id_token_algorithms_list_the_configured_one_first_and_always_rs256() {
    for (alg, expected) in [
        (latchkey_tokens::Algorithm::EdDSA, vec!["EdDSA", "RS256"]),
        (latchkey_tokens::Algorithm::ES256, vec!["ES256", "RS256"]),
        (latchkey_tokens::Algorithm::RS256, vec!["RS256"]),
    ] {
        let mut config = test_config();
        config.id_token.algorithm = alg;
        let app = TestApp::with_config(config).await;
        let m = app
            .get("/.well-known/openid-configuration", &[])
            .await
            .json();
        assert_eq!(
            m["id_token_signing_alg_values_supported"],
            serde_json::json!(expected)
        );
    }
}

#[tokio::test]
async fn authorization_server_metadata_carries_the_authorization_endpoint_fields() {
    let app = TestApp::new().await;
    let r = app
        .get("/.well-known/oauth-authorization-server", &[])
        .await;
    assert_eq!(r.header("cache-control"), Some("public, max-age=60"));
    let m = r.json();
    let oidc = app
        .get("/.well-known/openid-configuration", &[])
        .await
        .json();
    for key in [
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "jwks_uri",
        "revocation_endpoint",
        "introspection_endpoint",
        "response_types_supported",
        "grant_types_supported",
        "code_challenge_methods_supported",
        "scopes_supported",
        "token_endpoint_auth_methods_supported",
        "authorization_response_iss_parameter_supported",
    ] {
        assert_eq!(m[key], oidc[key], "{key}");
    }
}
