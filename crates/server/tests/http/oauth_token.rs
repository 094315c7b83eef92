//! POST /oauth/token: the password grant, client authentication, scopes, and bad input.
use crate::harness::*;
use base64::Engine;

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

#[tokio::test]
async fn password_grant_returns_an_rfc9068_access_token_and_a_refresh_token() {
    let app = TestApp::new().await;
    let user = app.sign_up("alice").await;
    let r = app.password_grant("alice", PASSWORD, "spa").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "read write");
    let refresh = body["refresh_token"].as_str().expect("refresh_token");
    assert!(refresh.len() >= 43, "at least 256 bits");

    let access = body["access_token"].as_str().expect("access_token");
    let header = jwt_part(access, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].as_str().is_some_and(|k| !k.is_empty()));
    let claims = jwt_part(access, 1);
    let now = app.clock_now();
    assert_eq!(claims["iss"], "http://127.0.0.1:8080");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["client_id"], "spa");
    assert_eq!(claims["scope"], "read write");
    assert_eq!(claims["iat"], now);
    assert_eq!(claims["exp"], now + 900);
    assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
    assert!(uuid::Uuid::parse_str(claims["sid"].as_str().expect("sid")).is_ok());
    // The refresh token is opaque: not a JWT, not the sid.
    assert_eq!(refresh.split('.').count(), 1);
    assert!(!refresh.contains(claims["sid"].as_str().expect("sid")));
}

trait ClockNow {
    fn clock_now(&self) -> i64;
}
impl ClockNow for TestApp {
    fn clock_now(&self) -> i64 {
        use latchkey_core::Clock;
        self.clock.now().unix_timestamp()
    }
}

#[tokio::test]
async fn each_login_is_a_new_session_with_unique_tokens() {
    let app = TestApp::new().await;
    let a = app.login("bob").await;
    let b = app.login_again("bob").await;
    assert_ne!(jwt_part(&a.access, 1)["sid"], jwt_part(&b.access, 1)["sid"]);
    assert_ne!(jwt_part(&a.access, 1)["jti"], jwt_part(&b.access, 1)["jti"]);
    assert_ne!(a.refresh, b.refresh);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_look_the_same() {
    let app = TestApp::new().await;
    app.sign_up("carol").await;
    let wrong = app
        .password_grant("carol", "not the password", "spa")
        .await
        .assert_error(400, "invalid_grant");
    let unknown = app
        .password_grant("nobody", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    let invalid_name = app
        .password_grant("no body", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, invalid_name);
}

#[tokio::test]
async fn banned_users_get_invalid_grant() {
    let app = TestApp::new().await;
    let user = app.sign_up("dan").await;
    let id = latchkey_core::UserId::parse(user["id"].as_str().expect("id")).expect("uuid");
    app.store
        .set_banned(id, Some(time::OffsetDateTime::now_utc()))
        .await
        .expect("ban");
    let body = app
        .password_grant("dan", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("banned")
    );
}

#[tokio::test]
async fn scopes_default_narrow_and_refuse() {
    let app = TestApp::new().await;
    app.sign_up("erin").await;
    let grant = |scope: &'static str| {
        let app = &app;
        async move {
            app.post_form(
                "/oauth/token",
                &[
                    ("grant_type", "password"),
                    ("username", "erin"),
                    ("password", PASSWORD),
                    ("client_id", "spa"),
                    ("scope", scope),
                ],
            )
            .await
        }
    };
    let r = grant("read").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["scope"], "read");
    assert_eq!(jwt_part(&r.str_field("access_token"), 1)["scope"], "read");
    grant("read admin").await.assert_error(400, "invalid_scope");
    // A refresh keeps the family's scope and may narrow it, never widen it.
    let narrowed = r.str_field("refresh_token");
    let r = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &narrowed),
                ("client_id", "spa"),
                ("scope", "write"),
            ],
        )
        .await;
    r.assert_error(400, "invalid_scope");
    let r = app.refresh(&narrowed).await;
    assert_eq!(r.json()["scope"], "read");
}

#[tokio::test]
async fn client_authentication() {
    let app = TestApp::new().await;
    app.sign_up("fay").await;
    let base = [
        ("grant_type", "password"),
        ("username", "fay"),
        ("password", PASSWORD),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut p = base.to_vec();
        p.extend_from_slice(extra);
        p
    };
    // Unknown or missing client.
    app.post_form("/oauth/token", &with(&[("client_id", "nope")]))
        .await
        .assert_error(401, "invalid_client");
    app.post_form("/oauth/token", &base)
        .await
        .assert_error(401, "invalid_client");
    // Confidential client: basic and post both work; the token carries its audience.
    let r = app
        .post_form_with(
            "/oauth/token",
            &base,
            &[("authorization", &basic("backend", BACKEND_SECRET))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(jwt_part(&r.str_field("access_token"), 1)["aud"], "internal");
    let r = app
        .post_form(
            "/oauth/token",
            &with(&[("client_id", "backend"), ("client_secret", BACKEND_SECRET)]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Wrong, missing or doubled credentials.
    let r = app
        .post_form_with(
            "/oauth/token",
            &base,
            &[(
                "authorization",
                &basic("backend", "wrong-secret-0123456789"),
            )],
        )
        .await;
    r.assert_error(401, "invalid_client");
    assert!(
        r.header("www-authenticate")
            .is_some_and(|v| v.starts_with("Basic"))
    );
    app.post_form("/oauth/token", &with(&[("client_id", "backend")]))
        .await
        .assert_error(401, "invalid_client");
    app.post_form(
        "/oauth/token",
        &with(&[("client_id", "backend"), ("client_secret", "")]),
    )
    .await
    .assert_error(401, "invalid_client");
    app.post_form_with(
        "/oauth/token",
        &with(&[("client_secret", BACKEND_SECRET)]),
        &[("authorization", &basic("backend", BACKEND_SECRET))],
    )
    .await
    .assert_error(400, "invalid_request");
    // A public client has no secret to present.
    app.post_form(
        "/oauth/token",
        &with(&[("client_id", "spa"), ("client_secret", "x")]),
    )
    .await
    .assert_error(401, "invalid_client");
    app.post_form_with("/oauth/token", &base, &[("authorization", "Basic %%%")])
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn json_bodies_are_accepted_too() {
    let app = TestApp::new().await;
    app.sign_up("gus").await;
    let r = app
        .post_json(
            "/oauth/token",
            &serde_json::json!({"grant_type": "password", "username": "gus", "password": PASSWORD, "client_id": "spa"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn bad_token_requests_are_clean_4xx() {
    let app = TestApp::new().await;
    app.sign_up("hal").await;
    app.post_form(
        "/oauth/token",
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("client_id", "spa"),
        ],
    )
    .await
    .assert_error(400, "unsupported_grant_type");
    app.post_form("/oauth/token", &[("client_id", "spa")])
        .await
        .assert_error(400, "invalid_request");
    app.post_form(
        "/oauth/token",
        &[
            ("grant_type", "password"),
            ("client_id", "spa"),
            ("username", "hal"),
        ],
    )
    .await
    .assert_error(400, "invalid_request");
    app.post_form(
        "/oauth/token",
        &[("grant_type", "refresh_token"), ("client_id", "spa")],
    )
    .await
    .assert_error(400, "invalid_request");
    app.post_raw(
        "/oauth/token",
        "application/x-www-form-urlencoded",
        b"grant_type=password&grant_type=refresh_token&client_id=spa".to_vec(),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
    app.post_raw(
        "/oauth/token",
        "application/x-www-form-urlencoded",
        b"%zz=%%".to_vec(),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
    app.post_raw("/oauth/token", "text/xml", b"<a/>".to_vec(), &[])
        .await
        .assert_error(415, "unsupported_media_type");
    app.post_raw(
        "/oauth/token",
        "application/json",
        b"{\"grant_type\": 7}".to_vec(),
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
    for garbage in [
        "",
        "x",
        &"A".repeat(43),
        &"A".repeat(10_000),
        "a.b.c",
        "\u{0}\u{1}",
        "../../etc/passwd",
    ] {
        app.refresh(garbage)
            .await
            .assert_error(400, "invalid_grant");
    }
}

#[tokio::test]
async fn a_public_client_may_use_basic_with_an_empty_secret() {
    let app = TestApp::new().await;
    app.sign_up("ivy").await;
    let base = [
        ("grant_type", "password"),
        ("username", "ivy"),
        ("password", PASSWORD),
    ];
    let r = app
        .post_form_with(
            "/oauth/token",
            &base,
            &[("authorization", &basic("spa", ""))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.post_form_with(
        "/oauth/token",
        &base,
        &[("authorization", &basic("spa", "guess"))],
    )
    .await
    .assert_error(401, "invalid_client");
}

/// API.md: a grant type the client does not list in `grant_types` is 400 `unauthorized_client`;
/// the password grant works only for clients that list it (the default lists
/// `authorization_code` and `refresh_token`).
#[tokio::test]
async fn grants_a_client_does_not_list_are_unauthorized_client() {
    let mut config = test_config();
    config.clients.push(latchkey_server::config::ClientConfig {
        id: "modern".into(),
        audience: "api".into(),
        ..Default::default()
    });
    config.clients.push(latchkey_server::config::ClientConfig {
        id: "no-refresh".into(),
        audience: "api".into(),
        grant_types: grants(&["password"]),
        ..Default::default()
    });
    let app = TestApp::with_config(config).await;
    app.sign_up("gina").await;
    app.password_grant("gina", PASSWORD, "modern")
        .await
        .assert_error(400, "unauthorized_client");
    let r = app.password_grant("gina", PASSWORD, "no-refresh").await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.refresh_as(&r.str_field("refresh_token"), "no-refresh")
        .await
        .assert_error(400, "unauthorized_client");
    // The check comes after client authentication: an unknown client is still invalid_client.
    app.password_grant("gina", PASSWORD, "nobody")
        .await
        .assert_error(401, "invalid_client");
}
