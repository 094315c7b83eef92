//! Fail closed: when the store cannot answer, nothing is authenticated, nothing is half-
//! written, a healthy family is never revoked by accident and a reused token never passes.
use crate::harness::*;
use latchkey_store::testing::FlakyStore;
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
