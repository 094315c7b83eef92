//! Fail closed: when the store cannot answer, nothing is authenticated, nothing is half-
//! written, a healthy family is never revoked by accident and a reused token never passes.
use crate::harness::*;
use latchkey_store::testing::{FailWhen, FlakyStore};
use std::sync::Arc;

async fn flaky_app() -> (TestApp, Arc<FlakyStore>) {
    let flaky = Arc::new(FlakyStore::new(
        Arc::new(latchkey_store::MemoryStore::new()),
    ));
    let app = TestApp::build(test_config(), flaky.clone(), None).await;
    (app, flaky)
}

#[tokio::test]
async fn readiness_follows_the_store() {
    let (app, flaky) = flaky_app().await;
    flaky.fail_reads(true);
    app.get("/readyz", &[])
        .await
        .assert_error(503, "unavailable");
    assert_eq!(
        app.get("/healthz", &[]).await.status,
        200,
        "liveness does not depend on the store"
    );
    flaky.fail_reads(false);
    assert_eq!(app.get("/readyz", &[]).await.status, 200);
}

#[tokio::test]
async fn nothing_is_authenticated_while_the_store_is_down() {
    let (app, flaky) = flaky_app().await;
    let pair = app.login("alice").await;
    flaky.fail_reads(true);
    let r = app.me(&pair.access).await;
    r.assert_error(503, "unavailable");
    assert!(r.header("retry-after").is_some());
    app.password_grant("alice", PASSWORD, "spa")
        .await
        .assert_error(503, "unavailable");
    app.refresh(&pair.refresh)
        .await
        .assert_error(503, "unavailable");
    flaky.fail_reads(false);
    assert_eq!(app.me(&pair.access).await.status, 200);
}

#[tokio::test]
async fn a_failed_rotation_write_changes_nothing() {
    let (app, flaky) = flaky_app().await;
    let pair = app.login("bob").await;
    flaky.fail_writes(true);
    app.refresh(&pair.refresh)
        .await
        .assert_error(503, "unavailable");
    app.password_grant("bob", PASSWORD, "spa")
        .await
        .assert_error(503, "unavailable");
    flaky.fail_writes(false);
    // The same token still rotates: it was neither consumed nor treated as reused.
    let next = app.rotate(&pair.refresh).await;
    assert_eq!(app.me(&next.access).await.status, 200);
}

#[tokio::test]
async fn a_reuse_whose_revocation_fails_is_refused_and_revoked_on_retry() {
    let (app, flaky) = flaky_app().await;
    let first = app.login("carol").await;
    let second = app.rotate(&first.refresh).await;
    flaky.fail_writes(true);
    // The reused token is not let through, and the session is not left half-revoked.
    app.refresh(&first.refresh)
        .await
        .assert_error(503, "unavailable");
    flaky.fail_writes(false);
    assert_eq!(
        app.me(&second.access).await.status,
        200,
        "revocation did not happen yet"
    );
    let body = app
        .refresh(&first.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("reuse")
    );
    app.refresh(&second.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&second.access)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn sign_up_fails_cleanly_when_the_store_is_down() {
    let (app, flaky) = flaky_app().await;
    flaky.fail_writes(true);
    app.post_json(
        "/v1/users",
        &serde_json::json!({"username": "dave", "password": PASSWORD}),
    )
    .await
    .assert_error(503, "unavailable");
    flaky.fail_writes(false);
    assert_eq!(
        app.post_json(
            "/v1/users",
            &serde_json::json!({"username": "dave", "password": PASSWORD})
        )
        .await
        .status,
        201,
        "no half-written user blocks the retry"
    );
}

/// A flaky app with the admin API on.
async fn flaky_admin_app() -> (TestApp, Arc<FlakyStore>) {
    let flaky = Arc::new(FlakyStore::new(
        Arc::new(latchkey_store::MemoryStore::new()),
    ));
    let mut config = test_config();
    config.admin_token = Some(latchkey_server::config::Redacted(ADMIN.into()));
    let app = TestApp::build(config, flaky.clone(), None).await;
    (app, flaky)
}

const ADMIN: &str = "admin-token-0123456789abcdef";
const NEW_PASSWORD: &str = "a brand new passphrase, long enough";

async fn change_password(app: &TestApp, access: &str) -> Response {
    app.call(
        "POST",
        "/v1/password",
        &[("authorization", &format!("Bearer {access}"))],
        Some(&serde_json::json!({
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
        })),
    )
    .await
}

async fn admin(app: &TestApp, method: &str, path: &str) -> Response {
    app.call(
        method,
        path,
        &[("authorization", &format!("Bearer {ADMIN}"))],
        None,
    )
    .await
}

/// Runs `request` and returns its response and how many store writes it made.
async fn counting_writes<F: std::future::Future<Output = Response>>(
    flaky: &FlakyStore,
    request: F,
) -> (Response, usize) {
    let before = flaky.writes();
    let r = request.await;
    (r, flaky.writes() - before)
}

/// The password change is one store write (new hash, new epoch, other sessions revoked): cut
/// before it, nothing changed and the same request succeeds on retry; cut after its commit,
/// all of it happened, never "password changed, other sessions alive".
#[tokio::test]
async fn a_password_change_is_never_half_applied() {
    let (app, flaky) = flaky_admin_app().await;
    let mine = app.login("frank").await;
    let other = app.login_again("frank").await;
    let (r, writes) = counting_writes(&flaky, async {
        flaky.fail_nth_write(1, FailWhen::Before);
        change_password(&app, &mine.access).await
    })
    .await;
    r.assert_error(503, "unavailable");
    assert_eq!(writes, 1, "the change is one store step");
    assert!(!flaky.nth_write_pending());
    // Nothing changed: the old password logs in, the other session refreshes.
    assert_eq!(
        app.password_grant("frank", PASSWORD, "spa").await.status,
        200
    );
    let other = app.rotate(&other.refresh).await;
    // The same request, retried, goes through.
    assert_eq!(change_password(&app, &mine.access).await.status, 204);
    app.refresh(&other.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.password_grant("frank", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");

    // Cut after the commit: the client sees 503, and everything was done.
    let (app, flaky) = flaky_admin_app().await;
    let mine = app.login("grace").await;
    let other = app.login_again("grace").await;
    flaky.fail_nth_write(1, FailWhen::AfterCommit);
    change_password(&app, &mine.access)
        .await
        .assert_error(503, "unavailable");
    app.refresh(&other.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&other.access)
        .await
        .assert_error(401, "unauthorized");
    app.password_grant("grace", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.password_grant("grace", NEW_PASSWORD, "spa")
            .await
            .status,
        200
    );
    // The session the change was made from was kept.
    app.rotate(&mine.refresh).await;
}

/// Ban and "revoke all" are one store write each: a failure before it leaves the user and
/// every session as they were; a failure after its commit leaves all of it done.
#[tokio::test]
async fn ban_and_revoke_all_are_never_half_applied() {
    for (what, method, action) in [("ban", "POST", "ban"), ("revoke all", "DELETE", "sessions")] {
        let (app, flaky) = flaky_admin_app().await;
        let user = app.sign_up("heidi").await;
        let id = user["id"].as_str().expect("id");
        let path = format!("/admin/v1/users/{id}/{action}");
        let a = app.login_again("heidi").await;
        let browser = app.browser_login("heidi").await;
        let (r, writes) = counting_writes(&flaky, async {
            flaky.fail_nth_write(1, FailWhen::Before);
            admin(&app, method, &path).await
        })
        .await;
        r.assert_error(503, "unavailable");
        assert_eq!(writes, 1, "{what} is one store step");
        // Untouched.
        let a = app.rotate(&a.refresh).await;
        assert_eq!(
            app.as_browser(&browser, "GET", "/v1/session", None)
                .await
                .status,
            200,
            "{what}"
        );
        assert_eq!(
            app.password_grant("heidi", PASSWORD, "spa").await.status,
            200
        );

        flaky.fail_writes_after_commit(true);
        admin(&app, method, &path)
            .await
            .assert_error(503, "unavailable");
        flaky.fail_writes_after_commit(false);
        app.refresh(&a.refresh)
            .await
            .assert_error(400, "invalid_grant");
        app.me(&a.access).await.assert_error(401, "unauthorized");
        app.as_browser(&browser, "GET", "/v1/session", None)
            .await
            .assert_error(401, "unauthorized");
        let after = app.password_grant("heidi", PASSWORD, "spa").await;
        if what == "ban" {
            after.assert_error(400, "invalid_grant");
        } else {
            assert_eq!(after.status, 200, "{}", after.text());
        }
        // Retrying after a lost answer is harmless.
        assert_eq!(admin(&app, method, &path).await.status, 204, "{what}");
    }
}
