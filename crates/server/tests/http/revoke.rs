//! POST /oauth/revoke (RFC 7009).
use crate::harness::*;

async fn revoke(app: &TestApp, token: &str, client_id: &str) -> Response {
    app.post_form(
        "/oauth/revoke",
        &[("token", token), ("client_id", client_id)],
    )
    .await
}

#[tokio::test]
async fn revoking_a_refresh_token_ends_the_session() {
    let app = TestApp::new().await;
    let pair = app.login("alice").await;
    let r = revoke(&app, &pair.refresh, "spa").await;
    assert_eq!(r.status, 200, "{}", r.text());
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&pair.access).await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn revoking_an_access_token_ends_the_session() {
    let app = TestApp::new().await;
    let pair = app.login("bob").await;
    let other = app.login_again("bob").await;
    let r = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", &pair.access),
                ("token_type_hint", "access_token"),
                ("client_id", "spa"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    app.me(&pair.access).await.assert_error(401, "unauthorized");
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.me(&other.access).await.status,
        200,
        "other sessions untouched"
    );
}

#[tokio::test]
async fn the_hint_is_only_a_hint() {
    let app = TestApp::new().await;
    let pair = app.login("cat").await;
    let r = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", &pair.refresh),
                ("token_type_hint", "access_token"),
                ("client_id", "spa"),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn another_clients_token_is_left_alone() {
    let app = TestApp::new().await;
    let pair = app.login("dan").await;
    let r = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", &pair.refresh),
                ("client_id", "backend"),
                ("client_secret", BACKEND_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", &pair.access),
                ("client_id", "backend"),
                ("client_secret", BACKEND_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(app.me(&pair.access).await.status, 200);
    assert_eq!(app.refresh(&pair.refresh).await.status, 200);
}

#[tokio::test]
async fn unknown_tokens_are_200_and_bad_requests_are_not() {
    let app = TestApp::new().await;
    for token in ["unknown", &"A".repeat(43), "a.b.c", ""] {
        let r = revoke(&app, token, "spa").await;
        assert_eq!(r.status, 200, "{token:?}: {}", r.text());
        assert_eq!(r.header("cache-control"), Some("no-store"));
    }
    app.post_form("/oauth/revoke", &[("client_id", "spa")])
        .await
        .assert_error(400, "invalid_request");
    app.post_form("/oauth/revoke", &[("token", "x")])
        .await
        .assert_error(401, "invalid_client");
    app.post_form("/oauth/revoke", &[("token", "x"), ("client_id", "nope")])
        .await
        .assert_error(401, "invalid_client");
    app.post_form(
        "/oauth/revoke",
        &[
            ("token", "x"),
            ("client_id", "backend"),
            ("client_secret", "wrong-secret-000000"),
        ],
    )
    .await
    .assert_error(401, "invalid_client");
}
