//! DESIGN invariant 7 over HTTP: a login that read the user before a ban, a password change or
//! a "revoke all" gets no usable session, and no session is refreshed or accepted for a user
//! whose ban happened before (docs/decisions/0008).
//!
//! Logins are stopped right before their session write (after the password check) by the
//! test store's hold, the event lands, then they go on: the deterministic form of the race.
//! Free-running logins racing the event add the nondeterministic one.
use crate::harness::*;
use latchkey_server::config::Redacted;
use latchkey_store::testing::FlakyStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

const ADMIN: &str = "admin-token-0123456789abcdef";
const NEW_PASSWORD: &str = "a brand new passphrase, long enough";

async fn app_with_hold() -> (Arc<TestApp>, Arc<FlakyStore>) {
    app_with_hold_over(Arc::new(latchkey_store::MemoryStore::new()), None).await
}

async fn app_with_hold_over(
    store: Arc<dyn latchkey_store::Store>,
    guard: Option<tempfile::TempDir>,
) -> (Arc<TestApp>, Arc<FlakyStore>) {
    let flaky = Arc::new(FlakyStore::new(store));
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    let app = TestApp::build(config, flaky.clone(), guard).await;
    (Arc::new(app), flaky)
}

/// The same app on a fresh SQLite file (the embedded default).
async fn sqlite_app_with_hold() -> (Arc<TestApp>, Arc<FlakyStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
    let store = latchkey_store::SqliteStore::connect(&url)
        .await
        .expect("SQLite");
    app_with_hold_over(Arc::new(store), Some(dir)).await
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

/// Waits until `n` session creations are held right before their write.
async fn wait_for_held(flaky: &FlakyStore, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while flaky.session_creations_waiting() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} logins reached their session write",
            flaky.session_creations_waiting()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `n` password grants of `username`, each on a task of its own.
fn spawn_grants(
    app: &Arc<TestApp>,
    username: &str,
    password: &str,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Response>> {
    (0..n)
        .map(|_| {
            let (app, username, password) =
                (app.clone(), username.to_string(), password.to_string());
            tokio::spawn(async move { app.password_grant(&username, &password, "spa").await })
        })
        .collect()
}

/// Every grant that got tokens: none refreshes, none is accepted as a Bearer token.
async fn assert_no_usable_session(app: &TestApp, grants: Vec<tokio::task::JoinHandle<Response>>) {
    for grant in grants {
        let r = grant.await.expect("grant task");
        if r.status == 200 {
            app.refresh(&r.str_field("refresh_token"))
                .await
                .assert_error(400, "invalid_grant");
            app.me(&r.str_field("access_token"))
                .await
                .assert_error(401, "unauthorized");
        } else {
            r.assert_error(400, "invalid_grant");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_grants_racing_a_ban_never_refresh_after_it() {
    let (app, flaky) = app_with_hold().await;
    grants_racing_a_ban(app, flaky).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_grants_racing_a_ban_never_refresh_after_it_on_sqlite() {
    let (app, flaky) = sqlite_app_with_hold().await;
    grants_racing_a_ban(app, flaky).await;
}

async fn grants_racing_a_ban(app: Arc<TestApp>, flaky: Arc<FlakyStore>) {
    let id = app.sign_up("alice").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Eight logins past their password check, stopped right before their session write.
    flaky.hold_session_creation(true);
    let held = spawn_grants(&app, "alice", PASSWORD, 8);
    wait_for_held(&flaky, 8).await;
    assert_eq!(
        admin(&app, "POST", &format!("/admin/v1/users/{id}/ban"))
            .await
            .status,
        204
    );
    flaky.hold_session_creation(false);
    for grant in held {
        let r = grant.await.expect("grant task");
        let body = r.assert_error(400, "invalid_grant");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| d.contains("changed during the login")),
            "{body}"
        );
    }

    // Free-running: eight grants and the ban at the same time, for a user of its own.
    let id = app.sign_up("bob").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let racing = spawn_grants(&app, "bob", PASSWORD, 8);
    let ban = {
        let app = app.clone();
        tokio::spawn(async move { admin(&app, "POST", &format!("/admin/v1/users/{id}/ban")).await })
    };
    assert_eq!(ban.await.expect("ban task").status, 204);
    assert_no_usable_session(&app, racing).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_with_the_old_password_racing_a_password_change_gets_nothing() {
    let (app, flaky) = app_with_hold().await;
    let mine = app.login("carol").await;
    flaky.hold_session_creation(true);
    let token_login = spawn_grants(&app, "carol", PASSWORD, 1);
    let cookie_login = {
        let app = app.clone();
        tokio::spawn(async move {
            app.cookie_login_response("carol", PASSWORD, &[("origin", ORIGIN)])
                .await
        })
    };
    wait_for_held(&flaky, 2).await;
    let changed = app
        .call(
            "POST",
            "/v1/password",
            &[("authorization", &format!("Bearer {}", mine.access))],
            Some(&serde_json::json!({
                "current_password": PASSWORD,
                "new_password": NEW_PASSWORD,
            })),
        )
        .await;
    assert_eq!(changed.status, 204, "{}", changed.text());
    flaky.hold_session_creation(false);
    assert_no_usable_session(&app, token_login).await;
    let cookie = cookie_login.await.expect("cookie login task");
    cookie.assert_error(401, "unauthorized");
    assert!(cookie.header("set-cookie").is_none());
    // The session the change was made from carries on; the new password logs in.
    let next = app.rotate(&mine.refresh).await;
    assert_eq!(app.me(&next.access).await.status, 200);
    assert_eq!(
        app.password_grant("carol", NEW_PASSWORD, "spa")
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logins_racing_revoke_all_get_nothing_and_revoke_others_keeps_the_caller() {
    let (app, flaky) = app_with_hold().await;
    let id = app.sign_up("dave").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    flaky.hold_session_creation(true);
    let held = spawn_grants(&app, "dave", PASSWORD, 4);
    wait_for_held(&flaky, 4).await;
    assert_eq!(
        admin(&app, "DELETE", &format!("/admin/v1/users/{id}/sessions"))
            .await
            .status,
        204
    );
    flaky.hold_session_creation(false);
    assert_no_usable_session(&app, held).await;

    // "Log out other devices" from a browser: logins in flight elsewhere get nothing, the
    // browser's own session goes on.
    let browser = app.browser_login("dave").await;
    flaky.hold_session_creation(true);
    let held = spawn_grants(&app, "dave", PASSWORD, 4);
    wait_for_held(&flaky, 4).await;
    let r = app
        .as_browser(&browser, "POST", "/v1/sessions/revoke-others", None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    flaky.hold_session_creation(false);
    assert_no_usable_session(&app, held).await;
    assert_eq!(
        app.as_browser(&browser, "GET", "/v1/session", None)
            .await
            .status,
        200
    );
    // Logging in afterwards works as before.
    let after = app.login_again("dave").await;
    app.rotate(&after.refresh).await;
}

#[tokio::test]
async fn a_banned_users_session_is_refused_even_if_it_was_never_revoked() {
    let (app, _flaky) = app_with_hold().await;
    let pair = app.login("erin").await;
    let browser = app.browser_login("erin").await;
    let me = app.me(&pair.access).await.json();
    let id = latchkey_core::UserId::parse(me["id"].as_str().expect("id")).expect("user id");
    // The ban flag alone, as if the revocations had never been written.
    assert!(
        app.store
            .set_banned(id, Some(time::OffsetDateTime::now_utc()))
            .await
            .expect("ban flag")
    );
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&pair.access).await.assert_error(401, "unauthorized");
    app.as_browser(&browser, "GET", "/v1/session", None)
        .await
        .assert_error(401, "unauthorized");
    app.get("/v1/authorize", &[("cookie", &browser.cookie)])
        .await
        .assert_error(401, "unauthorized");
    for token in [&pair.refresh, &pair.access] {
        let r = app
            .post_form(
                "/oauth/introspect",
                &[
                    ("token", token),
                    ("client_id", "backend"),
                    ("client_secret", BACKEND_SECRET),
                ],
            )
            .await;
        assert_eq!(r.json(), serde_json::json!({"active": false}));
    }
    // Nothing was revoked: lifting the flag alone lets the same session work again, which
    // shows it was the user's state, read at each use, that refused it.
    assert!(app.store.set_banned(id, None).await.expect("ban flag"));
    app.rotate(&pair.refresh).await;
    assert_eq!(
        app.as_browser(&browser, "GET", "/v1/session", None)
            .await
            .status,
        200
    );
}
