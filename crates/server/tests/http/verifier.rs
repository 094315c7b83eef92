//! A resource server's view: `latchkey-verify` against a real Latchkey. Every kind of
//! revocation makes a still-unexpired access token fail within a second, and a key rotation
//! under load refuses no valid token.
use crate::harness::*;
use crate::socket::{Running, start};
use latchkey_server::config::{Redacted, Ttl};
use latchkey_verify::{Verifier, VerifierConfig, VerifyError};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-for-verifier-tests";

async fn verifier(server: &Running) -> Verifier {
    let mut config = VerifierConfig::new("http://127.0.0.1:8080", "api");
    config.jwks_url = Some(format!("{}/.well-known/jwks.json", server.base));
    config.feed_url = Some(format!("{}/v1/revocations", server.base));
    config.feed_poll_interval = Duration::from_millis(100);
    config.jwks_min_refresh_interval = Duration::from_millis(500);
    Verifier::start(config).await.expect("verifier starts")
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn form(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .form(params)
            .send()
            .await
            .expect("request");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn login(&self, username: &str) -> (String, String) {
        let (status, body) = self
            .form(
                "/oauth/token",
                &[
                    ("grant_type", "password"),
                    ("username", username),
                    ("password", PASSWORD),
                    ("client_id", "spa"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        (
            body["access_token"].as_str().expect("access").into(),
            body["refresh_token"].as_str().expect("refresh").into(),
        )
    }

    async fn sign_up(&self, username: &str) -> String {
        let r = self
            .http
            .post(format!("{}/v1/users", self.base))
            .json(&json!({"username": username, "password": PASSWORD}))
            .send()
            .await
            .expect("sign up");
        assert_eq!(r.status(), 201);
        r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .into()
    }
}

/// How long after `since` the verifier starts refusing `token` (panics after 3 s).
async fn refused_after(verifier: &Verifier, token: &str, since: Instant) -> Duration {
    loop {
        match verifier.verify(token).await {
            Err(VerifyError::Revoked) => return since.elapsed(),
            Err(other) => panic!("refused for the wrong reason: {other:?}"),
            Ok(_) => {}
        }
        assert!(
            since.elapsed() < Duration::from_secs(3),
            "still accepted 3 s after the revocation"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_revocation_reaches_the_resource_server_within_a_second() {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    let server = start(config).await;
    let verifier = verifier(&server).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    let user_id = c.sign_up("rs-user").await;

    // Logout (RFC 7009 revocation).
    let (access, refresh) = c.login("rs-user").await;
    verifier.verify(&access).await.expect("valid before");
    let t = Instant::now();
    assert_eq!(
        c.form(
            "/oauth/revoke",
            &[("token", &refresh), ("client_id", "spa")]
        )
        .await
        .0,
        200
    );
    let logout = refused_after(&verifier, &access, t).await;

    // Reuse detection.
    let (access, refresh) = c.login("rs-user").await;
    c.form(
        "/oauth/token",
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &refresh),
            ("client_id", "spa"),
        ],
    )
    .await;
    verifier.verify(&access).await.expect("valid before");
    let t = Instant::now();
    let (status, _) = c
        .form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "spa"),
            ],
        )
        .await;
    assert_eq!(status, 400);
    let reuse = refused_after(&verifier, &access, t).await;

    // Password change (from another session, which survives).
    let (victim, _) = c.login("rs-user").await;
    let (changer, _) = c.login("rs-user").await;
    verifier.verify(&victim).await.expect("valid before");
    let t = Instant::now();
    let r = c
        .http
        .post(format!("{}/v1/password", c.base))
        .bearer_auth(&changer)
        .json(&json!({"current_password": PASSWORD, "new_password": PASSWORD.to_string() + "!"}))
        .send()
        .await
        .expect("change password");
    assert_eq!(r.status(), 204);
    let password = refused_after(&verifier, &victim, t).await;
    verifier
        .verify(&changer)
        .await
        .expect("the changing session stays valid");

    // Ban.
    let t = Instant::now();
    let r = c
        .http
        .post(format!("{}/admin/v1/users/{user_id}/ban", c.base))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("ban");
    assert_eq!(r.status(), 204);
    let ban = refused_after(&verifier, &changer, t).await;

    for (kind, took) in [
        ("logout", logout),
        ("reuse", reuse),
        ("password", password),
        ("ban", ban),
    ] {
        assert!(
            took < Duration::from_secs(1),
            "{kind}: refused only after {took:?}"
        );
    }
}

/// A role removed while a token is live: a feed-following verifier refuses that token within
/// a second, the user stays logged in (the refresh works), and the refreshed token, with the
/// new roles, passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_role_reaches_the_resource_server_within_a_second_without_a_logout() {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    let server = start(config).await;
    let verifier = verifier(&server).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    let user_id = c.sign_up("rs-roles").await;
    let put_roles = |roles: &'static [&'static str]| {
        let (http, url) = (
            c.http.clone(),
            format!("{}/admin/v1/users/{user_id}/roles", c.base),
        );
        async move {
            let r = http
                .put(url)
                .bearer_auth(ADMIN)
                .json(&json!({ "roles": roles }))
                .send()
                .await
                .expect("put roles");
            assert_eq!(r.status(), 200);
        }
    };
    put_roles(&["admin", "reader"]).await;
    let (access, refresh) = c.login("rs-roles").await;
    let (bystander, _) = c.login("rs-roles").await;
    let claims = verifier.verify(&access).await.expect("valid before");
    assert_eq!(
        claims.roles,
        vec!["admin".to_string(), "reader".to_string()]
    );

    // Granting adds no feed entry: the token keeps passing.
    put_roles(&["admin", "reader", "writer"]).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    verifier
        .verify(&access)
        .await
        .expect("still valid after a grant");

    let t = Instant::now();
    put_roles(&["reader", "writer"]).await;
    let took = refused_after(&verifier, &access, t).await;
    assert!(took < Duration::from_secs(1), "refused only after {took:?}");
    assert_eq!(
        verifier.verify(&bystander).await,
        Err(VerifyError::Revoked),
        "every token minted before the change is stale"
    );
    assert!(
        !verifier.is_revoked(&claims.sid),
        "the session is not revoked"
    );

    // Not logged out: the refresh works at once and its token passes with the new roles.
    let (status, body) = c
        .form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh),
                ("client_id", "spa"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = body["access_token"].as_str().expect("access");
    let claims = verifier
        .verify(fresh)
        .await
        .expect("the refreshed token passes");
    assert_eq!(
        claims.roles,
        vec!["reader".to_string(), "writer".to_string()]
    );
    let refreshed = body["refresh_token"].as_str().expect("refresh");
    let (status, body) = c
        .form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refreshed),
                ("client_id", "spa"),
            ],
        )
        .await;
    assert_eq!(status, 200, "refresh keeps working: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_refuses_no_valid_token() {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    config.keys.publish_delay = Ttl(Duration::from_millis(300));
    let server = start(config).await;
    let verifier = verifier(&server).await;
    let c = Client {
        http: reqwest::Client::new(),
        base: server.base.clone(),
    };
    c.sign_up("rotating").await;
    let (_, mut refresh) = c.login("rotating").await;

    let rotate = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = c
            .http
            .post(format!("{}/admin/v1/keys/rotate", c.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("rotate");
        assert_eq!(r.status(), 200);
        let kid = r.json::<Value>().await.expect("json")["kid"]
            .as_str()
            .expect("kid")
            .to_string();
        // Activation is picked up on the instance's next key reload; do it now.
        tokio::time::sleep(Duration::from_millis(400)).await;
        latchkey_server::keys::reload(&server.state)
            .await
            .expect("reload");
        kid
    };
    let load = async {
        let mut kids = std::collections::BTreeSet::new();
        let mut verified = 0;
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let (status, body) = c
                .form(
                    "/oauth/token",
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &refresh),
                        ("client_id", "spa"),
                    ],
                )
                .await;
            assert_eq!(status, 200, "{body}");
            refresh = body["refresh_token"].as_str().expect("refresh").into();
            let access = body["access_token"].as_str().expect("access");
            kids.insert(
                jwt_part(access, 0)["kid"]
                    .as_str()
                    .expect("kid")
                    .to_string(),
            );
            verifier
                .verify(access)
                .await
                .unwrap_or_else(|e| panic!("a valid token was refused: {e:?}"));
            verified += 1;
        }
        (kids, verified)
    };
    let (new_kid, (kids, verified)) = tokio::join!(rotate, load);
    assert!(
        kids.contains(&new_kid),
        "the new key never signed during the run: {kids:?}"
    );
    assert_eq!(kids.len(), 2, "{kids:?}");
    assert!(verified > 20, "too little load: {verified}");
}
