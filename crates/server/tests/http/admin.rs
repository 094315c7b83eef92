//! The admin API: off (404) without a token, 401 and throttled with a wrong one.
use crate::harness::*;
use latchkey_server::config::Redacted;

const ADMIN: &str = "admin-token-0123456789abcdef";

async fn admin_app() -> TestApp {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    TestApp::with_config(config).await
}

async fn admin(app: &TestApp, method: &str, path: &str, token: &str) -> Response {
    app.call(
        method,
        path,
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .await
}

#[tokio::test]
async fn without_an_admin_token_the_admin_api_does_not_exist() {
    let app = TestApp::new().await;
    let user = app.sign_up("alice").await;
    let id = user["id"].as_str().expect("id");
    for (method, path) in [
        ("POST", format!("/admin/v1/users/{id}/ban")),
        ("POST", format!("/admin/v1/users/{id}/unban")),
        ("DELETE", format!("/admin/v1/users/{id}/sessions")),
    ] {
        admin(&app, method, &path, ADMIN)
            .await
            .assert_error(404, "not_found");
        admin(&app, method, &path, "")
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn ban_revokes_everything_and_refuses_logins_until_unban() {
    let app = admin_app().await;
    let user = app.sign_up("bob").await;
    let id = user["id"].as_str().expect("id");
    let b = app.browser_login("bob").await;
    let t = app.login_again("bob").await;
    assert_eq!(
        admin(&app, "POST", &format!("/admin/v1/users/{id}/ban"), ADMIN)
            .await
            .status,
        204
    );
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
    app.refresh(&t.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&t.access).await.assert_error(401, "unauthorized");
    app.password_grant("bob", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    app.cookie_login_response("bob", PASSWORD, &[])
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        admin(&app, "POST", &format!("/admin/v1/users/{id}/unban"), ADMIN)
            .await
            .status,
        204
    );
    assert_eq!(app.password_grant("bob", PASSWORD, "spa").await.status, 200);
    assert_eq!(
        app.cookie_login_response("bob", PASSWORD, &[]).await.status,
        200
    );
}

#[tokio::test]
async fn revoke_all_sessions_of_a_user() {
    let app = admin_app().await;
    let user = app.sign_up("carol").await;
    app.sign_up("dan").await;
    let b = app.browser_login("carol").await;
    let t = app.login_again("carol").await;
    let bystander = app.browser_login("dan").await;
    let id = user["id"].as_str().expect("id");
    assert_eq!(
        admin(
            &app,
            "DELETE",
            &format!("/admin/v1/users/{id}/sessions"),
            ADMIN
        )
        .await
        .status,
        204
    );
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
    app.refresh(&t.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &bystander.cookie)], None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.password_grant("carol", PASSWORD, "spa").await.status,
        200,
        "not a ban"
    );
}

#[tokio::test]
async fn unknown_users_are_404() {
    let app = admin_app().await;
    for id in [uuid::Uuid::new_v4().to_string(), "nope".to_string()] {
        admin(&app, "POST", &format!("/admin/v1/users/{id}/ban"), ADMIN)
            .await
            .assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn wrong_tokens_are_401_then_throttled() {
    let app = admin_app().await;
    let user = app.sign_up("erin").await;
    let path = format!("/admin/v1/users/{}/unban", user["id"].as_str().expect("id"));
    for wrong in [
        "",
        "admin-token",
        &format!("{ADMIN}x"),
        &ADMIN[..ADMIN.len() - 1],
    ] {
        admin(&app, "POST", &path, wrong)
            .await
            .assert_error(401, "unauthorized");
    }
    app.call("POST", &path, &[], None)
        .await
        .assert_error(401, "unauthorized");
    for _ in 0..5 {
        admin(&app, "POST", &path, "guess").await;
    }
    // Past the failure budget even the right token is refused, so guessing learns nothing.
    let r = admin(&app, "POST", &path, ADMIN).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

#[tokio::test]
async fn a_user_session_token_is_not_an_admin_token() {
    let app = admin_app().await;
    let user = app.sign_up("fay").await;
    let t = app.login_again("fay").await;
    let path = format!("/admin/v1/users/{}/ban", user["id"].as_str().expect("id"));
    admin(&app, "POST", &path, &t.access)
        .await
        .assert_error(401, "unauthorized");
}

/// The admin API takes usernames wherever it takes ids, as the CLI does (compared after the
/// login normalisation); unknown names and ids are 404.
#[tokio::test]
async fn users_can_be_named_by_username() {
    let app = admin_app().await;
    let user = app.sign_up("Dora").await;
    let t = app.login_again("Dora").await;
    let r = admin(&app, "GET", "/admin/v1/users/dora", ADMIN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], user["id"]);
    assert_eq!(
        admin(&app, "POST", "/admin/v1/users/DORA/ban", ADMIN)
            .await
            .status,
        204
    );
    app.refresh(&t.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        admin(&app, "POST", "/admin/v1/users/dora/unban", ADMIN)
            .await
            .status,
        204
    );
    for path in [
        "/admin/v1/users/nobody/ban",
        "/admin/v1/users/6f1c2d3e-0000-4000-8000-000000000000/ban",
        "/admin/v1/users/%20/ban",
    ] {
        admin(&app, "POST", path, ADMIN)
            .await
            .assert_error(404, "not_found");
    }
}
