//! POST /oauth/introspect (RFC 7662).
use crate::harness::*;
use latchkey_server::config::Redacted;
use serde_json::json;

async fn introspect(app: &TestApp, token: &str) -> Response {
    app.post_form(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_id", "backend"),
            ("client_secret", BACKEND_SECRET),
        ],
    )
    .await
}

#[tokio::test]
async fn active_access_and_refresh_tokens() {
    let app = TestApp::new().await;
    let user = app.sign_up("alice").await;
    let t = app.login_again("alice").await;
    let r = introspect(&app, &t.access).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    let claims = jwt_part(&t.access, 1);
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["sub"], user["id"]);
    for field in ["exp", "iat", "sid", "client_id", "scope"] {
        assert_eq!(body[field], claims[field], "{field}");
    }
    let body = introspect(&app, &t.refresh).await.json();
    assert_eq!(body["active"], true);
    assert_eq!(body["token_type"], "refresh_token");
    assert_eq!(body["sid"], claims["sid"]);
    assert_eq!(body["client_id"], "spa");
    assert_eq!(body["scope"], "read write");
    assert!(body["exp"].as_i64().is_some() && body["iat"].as_i64().is_some());
}

#[tokio::test]
async fn anything_not_active_is_exactly_active_false() {
    let app = TestApp::new().await;
    let t = app.login("bob").await;
    let next = app.rotate(&t.refresh).await;
    let inactive = json!({"active": false});
    assert_eq!(
        introspect(&app, &t.refresh).await.json(),
        inactive,
        "consumed refresh token"
    );
    for garbage in ["", "nope", "a.b.c", &"A".repeat(43)] {
        assert_eq!(introspect(&app, garbage).await.json(), inactive);
    }
    app.post_form(
        "/oauth/revoke",
        &[("token", &next.refresh), ("client_id", "spa")],
    )
    .await;
    assert_eq!(
        introspect(&app, &next.access).await.json(),
        inactive,
        "revoked session"
    );
    assert_eq!(introspect(&app, &next.refresh).await.json(), inactive);
    let u = app.login_again("bob").await;
    app.clock.advance(time::Duration::minutes(16));
    assert_eq!(
        introspect(&app, &u.access).await.json(),
        inactive,
        "expired"
    );
}

#[tokio::test]
async fn only_confidential_clients_or_the_admin_may_introspect() {
    let mut config = test_config();
    config.admin_token = Some(Redacted("admin-token-0123456789".into()));
    let app = TestApp::with_config(config).await;
    let t = app.login("carol").await;
    app.post_form("/oauth/introspect", &[("token", &t.access)])
        .await
        .assert_error(401, "invalid_client");
    app.post_form(
        "/oauth/introspect",
        &[("token", &t.access), ("client_id", "spa")],
    )
    .await
    .assert_error(401, "invalid_client");
    app.post_form(
        "/oauth/introspect",
        &[
            ("token", &t.access),
            ("client_id", "backend"),
            ("client_secret", "wrong-secret-0000000"),
        ],
    )
    .await
    .assert_error(401, "invalid_client");
    app.post_form_with(
        "/oauth/introspect",
        &[("token", &t.access)],
        &[("authorization", &format!("Bearer {}", t.access))],
    )
    .await
    .assert_error(401, "invalid_client");
    let r = app
        .post_form_with(
            "/oauth/introspect",
            &[("token", &t.access)],
            &[("authorization", "Bearer admin-token-0123456789")],
        )
        .await;
    assert_eq!(r.json()["active"], true);
    app.post_form(
        "/oauth/introspect",
        &[("client_id", "backend"), ("client_secret", BACKEND_SECRET)],
    )
    .await
    .assert_error(400, "invalid_request");
}

/// The admin token presented to `/oauth/introspect` is throttled like at the admin API (one
/// failure budget per address for both): guessing it there gets 429 too, even for the right
/// token once over budget.
#[tokio::test]
async fn admin_token_guesses_at_introspect_are_throttled() {
    let admin = "admin-token-0123456789";
    let mut config = test_config();
    config.admin_token = Some(Redacted(admin.into()));
    let app = TestApp::with_config(config).await;
    let t = app.login("gus").await;
    let as_admin = |token: &str| {
        let auth = format!("Bearer {token}");
        let access = t.access.clone();
        let app = &app;
        async move {
            app.post_form_with(
                "/oauth/introspect",
                &[("token", &access)],
                &[("authorization", &auth)],
            )
            .await
        }
    };
    assert_eq!(as_admin(admin).await.json()["active"], true);
    for i in 0..10 {
        as_admin(&format!("guess-{i}"))
            .await
            .assert_error(401, "invalid_client");
    }
    let r = as_admin(admin).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // One budget: the admin API is closed to this address as well.
    app.call(
        "POST",
        "/admin/v1/keys/rotate",
        &[("authorization", &format!("Bearer {admin}"))],
        None,
    )
    .await
    .assert_error(429, "rate_limited");
}
