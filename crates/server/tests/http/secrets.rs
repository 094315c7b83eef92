//! No secret reaches the logs, in-process at TRACE, with every step's status asserted (a step
//! that failed early would silently shrink the scan) and every header that carries a secret:
//! `Authorization: Bearer` with an access token, the admin token and the feed token,
//! `Authorization: Basic` with a confidential client's secret, the session `Cookie` with its
//! `X-CSRF-Token`, and wrong guesses of each; plus the secrets bodies carry (passwords,
//! refresh tokens, `client_secret`).
//!
//! The logs are this test's own: a TRACE subscriber for its thread (the runtime of a
//! `#[tokio::test]` runs every task of the test there), on top of the binary's global TRACE
//! subscriber, so every callsite is enabled and nothing another test logs is mixed in.
use crate::harness::*;
use serde_json::json;
use std::sync::{Arc, Mutex};

const ADMIN: &str = "admin-token-for-the-header-scan-01";
const FEED: &str = "feed-token-for-the-header-scan-02";
const NEW_PASSWORD: &str = "the new password of the header scan";
const WRONG_ADMIN: &str = "wrong-admin-guess-header-scan-03";
const WRONG_CLIENT: &str = "wrong-client-secret-header-scan-04";
const WRONG_FEED: &str = "wrong-feed-guess-header-scan-05";
const WRONG_PASSWORD: &str = "a wrong password guess in the header scan";

/// Where this test's subscriber writes.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn basic(id: &str, secret: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}

#[track_caller]
fn expect(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status.as_u16(), status, "{what}: {}", r.text());
}

#[tokio::test]
async fn no_secret_in_any_header_or_body_is_logged_at_trace() {
    // The global subscriber first (every callsite enabled), then this thread's own.
    crate::observability::captured_logs();
    let captured = Sink::default();
    let writer = captured.clone();
    let _logging = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish(),
    );
    let mut config = test_config();
    config.admin_token = Some(latchkey_server::config::Redacted(ADMIN.into()));
    config.feed_token = Some(latchkey_server::config::Redacted(FEED.into()));
    config.refresh.reuse_interval = latchkey_server::config::Ttl(std::time::Duration::from_secs(5));
    let app = TestApp::with_config(config).await;
    let bearer = |token: &str| format!("Bearer {token}");

    app.sign_up("header-scan").await;
    let banned = app.sign_up("header-scan-banned").await;
    let r = app
        .password_grant("header-scan", WRONG_PASSWORD, "spa")
        .await;
    r.assert_error(400, "invalid_grant");
    let t1 = app.login_again("header-scan").await;
    let t2 = app.rotate(&t1.refresh).await;
    let replay = app.rotate(&t1.refresh).await; // the grace window
    assert_eq!(replay.refresh, t2.refresh);

    // Bearer access tokens.
    expect(&app.me(&t2.access).await, 200, "/v1/me");
    let r = app
        .get("/v1/authorize", &[("authorization", &bearer(&t2.access))])
        .await;
    expect(&r, 200, "forward auth");
    let r = app
        .get("/v1/sessions", &[("authorization", &bearer(&t2.access))])
        .await;
    expect(&r, 200, "sessions with Bearer");

    // A confidential client over Basic and in the form; wrong secrets each way.
    let good = basic("backend", BACKEND_SECRET);
    let wrong = basic("backend", WRONG_CLIENT);
    let r = app
        .post_form_with(
            "/oauth/introspect",
            &[("token", &t2.access)],
            &[("authorization", &format!("Basic {good}"))],
        )
        .await;
    expect(&r, 200, "introspection with Basic");
    assert_eq!(r.json()["active"], true);
    let r = app
        .post_form(
            "/oauth/introspect",
            &[
                ("token", &t2.refresh),
                ("client_id", "backend"),
                ("client_secret", BACKEND_SECRET),
            ],
        )
        .await;
    expect(&r, 200, "introspection with client_secret_post");
    let r = app
        .post_form_with(
            "/oauth/introspect",
            &[("token", &t2.access)],
            &[("authorization", &format!("Basic {wrong}"))],
        )
        .await;
    r.assert_error(401, "invalid_client");
    let r = app
        .post_form(
            "/oauth/introspect",
            &[
                ("token", &t2.access),
                ("client_id", "backend"),
                ("client_secret", WRONG_CLIENT),
            ],
        )
        .await;
    r.assert_error(401, "invalid_client");

    // The admin token and the feed token, right and wrong.
    let r = app
        .post_form_with(
            "/oauth/introspect",
            &[("token", &t2.refresh)],
            &[("authorization", &bearer(ADMIN))],
        )
        .await;
    expect(&r, 200, "introspection with the admin token");
    let banned_id = banned["id"].as_str().expect("id");
    let r = app
        .call(
            "POST",
            &format!("/admin/v1/users/{banned_id}/ban"),
            &[("authorization", &bearer(ADMIN))],
            None,
        )
        .await;
    expect(&r, 204, "admin ban");
    let r = app
        .call(
            "POST",
            "/admin/v1/keys/rotate",
            &[("authorization", &bearer(WRONG_ADMIN))],
            None,
        )
        .await;
    expect(&r, 401, "admin call with a wrong token");
    let r = app
        .get("/v1/revocations", &[("authorization", &bearer(FEED))])
        .await;
    expect(&r, 200, "feed with its token");
    let r = app
        .get("/v1/revocations", &[("authorization", &bearer(WRONG_FEED))])
        .await;
    r.assert_error(401, "unauthorized");

    // Cookie mode: the cookie, with and without its CSRF token, and a broken one.
    let b = app.browser_login("header-scan").await;
    let r = app.get("/v1/session", &[("cookie", &b.cookie)]).await;
    expect(&r, 200, "GET /v1/session");
    let r = app
        .with_cookie_only(&b, "POST", "/v1/sessions/revoke-others", None)
        .await;
    r.assert_error(403, "csrf_failed");
    let r = app
        .get("/v1/session", &[("cookie", &format!("{}x", b.cookie))])
        .await;
    assert!(r.status.is_client_error(), "a broken cookie: {}", r.status);
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&json!({"current_password": WRONG_PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await;
    r.assert_error(403, "forbidden");
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await;
    expect(&r, 204, "password change");
    let r = app.refresh(&t2.refresh).await;
    r.assert_error(400, "invalid_grant"); // revoked by the password change
    let r = app.refresh(&t1.refresh).await;
    r.assert_error(400, "invalid_grant"); // consumed, its family revoked
    let r = app.as_browser(&b, "DELETE", "/v1/session", None).await;
    expect(&r, 204, "logout");
    let r = app
        .post_form(
            "/oauth/revoke",
            &[("token", &t2.refresh), ("client_id", "spa")],
        )
        .await;
    expect(&r, 200, "revoke");

    let mut secrets: Vec<String> = [
        PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        BACKEND_SECRET,
        WRONG_CLIENT,
        ADMIN,
        WRONG_ADMIN,
        FEED,
        WRONG_FEED,
    ]
    .into_iter()
    .map(String::from)
    .collect();
    secrets.extend([good, wrong, b.csrf.clone()]);
    secrets.push(b.cookie.split_once('=').expect("pair").1.to_string());
    for pair in [&t1, &t2] {
        secrets.push(pair.access.clone());
        secrets.push(pair.refresh.clone());
        secrets.push(pair.access.rsplit('.').next().expect("signature").into());
    }

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        // The most verbose level Latchkey itself logs at is DEBUG (TRACE is enabled).
        logs.contains("DEBUG") && logs.contains("client authentication failed"),
        "the scan saw no verbose logs of this test:\n{logs}"
    );
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret was logged: {}…",
            &secret[..secret.len().min(8)]
        );
    }
}
