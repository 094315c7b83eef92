//! Cookie mode: login, the cookie's attributes, fixation, CSRF, timeouts, bad cookies.
use crate::harness::*;
use serde_json::json;
use time::Duration;

#[tokio::test]
async fn login_sets_a_host_prefixed_httponly_cookie_and_returns_the_session() {
    let app = TestApp::new().await;
    let user = app.sign_up("alice").await;
    let r = app
        .cookie_login_response("alice", PASSWORD, &[("origin", ORIGIN)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let set_cookie = r.header("set-cookie").expect("Set-Cookie");
    let (pair, attributes) = set_cookie.split_once("; ").expect("attributes");
    let (name, secret) = pair.split_once('=').expect("name=value");
    assert_eq!(name, "__Host-latchkey");
    assert_eq!(secret.len(), 43, "256 bits, base64url");
    assert_eq!(
        attributes,
        "Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=604800"
    );
    assert!(!set_cookie.to_ascii_lowercase().contains("domain"));
    let body = r.json();
    assert!(
        !r.text().contains(secret),
        "the cookie secret must never appear in a body"
    );
    assert_eq!(body["session"]["user"]["id"], user["id"]);
    assert_eq!(body["session"]["user"]["username"], "alice");
    assert_ne!(
        body["session"]["id"].as_str(),
        Some(secret),
        "the public sid is not the secret"
    );
    assert_eq!(body["csrf_token"].as_str().map(str::len), Some(43));
    for field in ["created_at", "expires_at"] {
        let text = body["session"][field].as_str().expect(field);
        assert!(
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }
}

#[tokio::test]
async fn get_session_returns_the_same_session_and_csrf_token() {
    let app = TestApp::new().await;
    app.sign_up("bob").await;
    let b = app.browser_login("bob").await;
    let r = app
        .call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["session"]["id"], b.sid.as_str());
    assert_eq!(body["csrf_token"], b.csrf.as_str());
    app.get("/v1/session", &[])
        .await
        .assert_error(401, "unauthorized");
    // /v1/me works with the cookie too.
    let me = app
        .call("GET", "/v1/me", &[("cookie", &b.cookie)], None)
        .await;
    assert_eq!(me.json()["session_id"], b.sid.as_str());
}

#[tokio::test]
async fn logout_deletes_the_session_and_clears_the_cookie() {
    let app = TestApp::new().await;
    app.sign_up("carol").await;
    let b = app.browser_login("carol").await;
    app.with_cookie_only(&b, "DELETE", "/v1/session", None)
        .await
        .assert_error(403, "csrf_failed");
    let r = app.as_browser(&b, "DELETE", "/v1/session", None).await;
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("set-cookie"),
        Some("__Host-latchkey=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0")
    );
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_cookie_presented_before_login_is_never_adopted() {
    let app = TestApp::new().await;
    app.sign_up("dan").await;
    // An attacker plants a well-formed cookie value in the victim's browser...
    let planted = format!(
        "__Host-latchkey={}",
        latchkey_core::Secret::generate().to_text()
    );
    let r = app
        .cookie_login_response("dan", PASSWORD, &[("cookie", &planted), ("origin", ORIGIN)])
        .await;
    assert_eq!(r.status, 200);
    let issued = r
        .header("set-cookie")
        .expect("Set-Cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    assert_ne!(issued, planted, "the planted value was adopted");
    // ...which opens nothing afterwards.
    app.call("GET", "/v1/session", &[("cookie", &planted)], None)
        .await
        .assert_error(401, "unauthorized");
    // A real earlier session presented at login is replaced and ended, not reused.
    let first = app.browser_login("dan").await;
    let r = app
        .cookie_login_response(
            "dan",
            PASSWORD,
            &[("cookie", &first.cookie), ("origin", ORIGIN)],
        )
        .await;
    let second = r
        .header("set-cookie")
        .expect("Set-Cookie")
        .split(';')
        .next()
        .expect("pair")
        .to_string();
    assert_ne!(second, first.cookie);
    app.call("GET", "/v1/session", &[("cookie", &first.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &second)], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn login_failures() {
    let app = TestApp::new().await;
    let user = app.sign_up("erin").await;
    app.cookie_login_response("erin", "wrong password!", &[])
        .await
        .assert_error(401, "unauthorized");
    app.cookie_login_response("nobody", PASSWORD, &[])
        .await
        .assert_error(401, "unauthorized");
    // Login CSRF: a foreign page must not log the victim into the attacker's account.
    app.cookie_login_response("erin", PASSWORD, &[("origin", "https://evil.example")])
        .await
        .assert_error(403, "csrf_failed");
    app.cookie_login_response("erin", PASSWORD, &[("origin", "null")])
        .await
        .assert_error(403, "csrf_failed");
    app.cookie_login_response("erin", PASSWORD, &[("sec-fetch-site", "cross-site")])
        .await
        .assert_error(403, "csrf_failed");
    // No Origin at all (curl, server-side clients) is fine; so is same-site.
    assert_eq!(
        app.cookie_login_response("erin", PASSWORD, &[])
            .await
            .status,
        200
    );
    assert_eq!(
        app.cookie_login_response("erin", PASSWORD, &[("sec-fetch-site", "same-site")])
            .await
            .status,
        200
    );
    let id = latchkey_core::UserId::parse(user["id"].as_str().expect("id")).expect("uuid");
    app.store
        .set_banned(id, Some(time::OffsetDateTime::now_utc()))
        .await
        .expect("ban");
    app.cookie_login_response("erin", PASSWORD, &[])
        .await
        .assert_error(403, "forbidden");
    app.post_raw(
        "/v1/session",
        "text/plain",
        br#"{"username":"erin","password":"x"}"#.to_vec(),
        &[],
    )
    .await
    .assert_error(415, "unsupported_media_type");
}

#[tokio::test]
async fn every_state_change_by_cookie_needs_the_csrf_token_and_a_good_origin() {
    let app = TestApp::new().await;
    app.sign_up("fay").await;
    let b = app.browser_login("fay").await;
    let other_user = {
        app.sign_up("gus").await;
        app.browser_login("gus").await
    };
    let other_session_of_fay = app.browser_login("fay").await;
    let pw = json!({"current_password": PASSWORD, "new_password": "another good password"});
    let targets: Vec<(&str, String, Option<serde_json::Value>)> = vec![
        ("DELETE", "/v1/session".into(), None),
        ("POST", "/v1/sessions/revoke-others".into(), None),
        (
            "DELETE",
            format!("/v1/sessions/{}", other_session_of_fay.sid),
            None,
        ),
        ("POST", "/v1/password".into(), Some(pw)),
    ];
    let cookie = b.cookie.as_str();
    let bad_header_sets: Vec<Vec<(&str, &str)>> = vec![
        vec![("cookie", cookie)],
        vec![("cookie", cookie), ("x-csrf-token", "")],
        vec![("cookie", cookie), ("x-csrf-token", "not-a-token")],
        vec![("cookie", cookie), ("x-csrf-token", &other_user.csrf)],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", &other_session_of_fay.csrf),
        ],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", &b.csrf),
            ("origin", "https://evil.example"),
        ],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", &b.csrf),
            ("origin", "null"),
        ],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", &b.csrf),
            ("origin", "http://127.0.0.1:8080.evil.example"),
        ],
        vec![
            ("cookie", cookie),
            ("x-csrf-token", &b.csrf),
            ("sec-fetch-site", "cross-site"),
        ],
    ];
    for (method, path, body) in &targets {
        for headers in &bad_header_sets {
            app.call(method, path, headers, body.as_ref())
                .await
                .assert_error(403, "csrf_failed");
        }
    }
    // Nothing happened: both of fay's sessions are alive and the password is unchanged.
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", cookie)], None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.call(
            "GET",
            "/v1/session",
            &[("cookie", &other_session_of_fay.cookie)],
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(app.password_grant("fay", PASSWORD, "spa").await.status, 200);
    // A simple (form/text) content type is refused before anything else looks at it.
    let r = app
        .call(
            "POST",
            "/v1/password",
            &[
                ("cookie", cookie),
                ("x-csrf-token", &b.csrf),
                ("content-type", "text/plain"),
            ],
            None,
        )
        .await;
    r.assert_error(415, "unsupported_media_type");
}

#[tokio::test]
async fn bad_cookies_are_clean_401s() {
    let app = TestApp::new().await;
    app.sign_up("hal").await;
    let b = app.browser_login("hal").await;
    let secret = b.cookie.trim_start_matches("__Host-latchkey=").to_string();
    let mut tampered = secret.clone().into_bytes();
    tampered[10] = if tampered[10] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).expect("ascii");
    let cases = vec![
        format!("__Host-latchkey={tampered}"),
        format!("__Host-latchkey={}", &secret[..42]),
        format!("__Host-latchkey={secret}x"),
        format!("__Host-latchkey={secret}; __Host-latchkey={secret}"),
        format!("__Host-latchkey={}", "A".repeat(8 * 1024)),
        format!("__Host-latchkey={secret}%0D%0ASet-Cookie:%20x=y"),
        "__Host-latchkey=".to_string(),
        "__Host-latchkey".to_string(),
        format!("latchkey={secret}"),
        "; ; ;=;==".to_string(),
    ];
    for cookie in cases {
        let r = app
            .call("GET", "/v1/session", &[("cookie", &cookie)], None)
            .await;
        assert_eq!(
            r.status,
            401,
            "cookie {:?}: {}",
            &cookie[..cookie.len().min(80)],
            r.text()
        );
        r.assert_error(401, "unauthorized");
    }
    // The secret in the query string or a header other than Cookie opens nothing.
    app.get(&format!("/v1/session?session={secret}"), &[])
        .await
        .assert_error(401, "unauthorized");
    app.get(&format!("/v1/session?__Host-latchkey={secret}"), &[])
        .await
        .assert_error(401, "unauthorized");
    app.get("/v1/me", &[("authorization", &format!("Bearer {secret}"))])
        .await
        .assert_error(401, "unauthorized");
    // Two cookie headers (HTTP/2 style) each carrying one copy is still a duplicate.
    app.call(
        "GET",
        "/v1/session",
        &[("cookie", &b.cookie), ("cookie", &b.cookie)],
        None,
    )
    .await
    .assert_error(401, "unauthorized");
}

fn timeouts(idle_minutes: u64, absolute_minutes: u64) -> latchkey_server::Config {
    let mut config = test_config();
    config.session.idle_timeout =
        latchkey_server::config::Ttl(std::time::Duration::from_secs(idle_minutes * 60));
    config.session.absolute_timeout =
        latchkey_server::config::Ttl(std::time::Duration::from_secs(absolute_minutes * 60));
    config
}

#[tokio::test]
async fn idle_timeout_is_enforced_and_activity_extends_it() {
    let app = TestApp::new().await;
    let app = TestApp::build(timeouts(30, 24 * 60), app.store.clone(), None).await;
    app.sign_up("ida").await;
    let b = app.browser_login("ida").await;
    for _ in 0..4 {
        app.clock.advance(Duration::minutes(29));
        assert_eq!(
            app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
                .await
                .status,
            200
        );
    }
    app.clock.advance(Duration::minutes(30));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
    // And it stays dead: activity after expiry does not revive it.
    app.clock.advance(Duration::seconds(-120));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn absolute_timeout_ends_even_an_active_session() {
    let app = TestApp::with_config(timeouts(30, 120)).await;
    app.sign_up("jon").await;
    let b = app.browser_login("jon").await;
    for _ in 0..5 {
        app.clock.advance(Duration::minutes(20));
        assert_eq!(
            app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
                .await
                .status,
            200
        );
    }
    app.clock.advance(Duration::minutes(20));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn activity_is_not_written_on_every_request() {
    let app = TestApp::new().await;
    app.sign_up("kim").await;
    let b = app.browser_login("kim").await;
    let sid = latchkey_core::SessionId::parse(&b.sid).expect("sid");
    let last_seen = || async {
        app.store
            .session(sid)
            .await
            .expect("get")
            .expect("exists")
            .last_seen_at
    };
    let at_login = last_seen().await;
    app.clock.advance(Duration::seconds(10));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await;
    assert_eq!(
        last_seen().await,
        at_login,
        "written within the touch interval"
    );
    app.clock.advance(Duration::seconds(60));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await;
    assert!(
        last_seen().await > at_login,
        "not written after the touch interval"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_past_the_idle_timeout_never_resurrect_the_session() {
    let app = std::sync::Arc::new(TestApp::sqlite(timeouts(30, 24 * 60)).await);
    app.sign_up("lee").await;
    let b = app.browser_login("lee").await;
    app.clock
        .advance(Duration::minutes(30) + Duration::milliseconds(1));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (app, cookie) = (app.clone(), b.cookie.clone());
            tokio::spawn(async move {
                app.call("GET", "/v1/session", &[("cookie", &cookie)], None)
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), 401);
    }
    app.clock.advance(Duration::seconds(-5));
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn plain_http_issuer_off_loopback_drops_the_prefix_and_secure() {
    let mut config = test_config();
    config.issuer = Some("http://auth.internal:8080".into());
    let app = TestApp::with_config(config).await;
    assert!(
        app.state.warnings.iter().any(|w| w.contains("__Host-")),
        "{:?}",
        app.state.warnings
    );
    app.sign_up("max").await;
    let r = app
        .cookie_login_response("max", PASSWORD, &[("origin", "http://auth.internal:8080")])
        .await;
    let set_cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(set_cookie.starts_with("latchkey="), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("pair");
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", cookie)], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn allowed_origins_are_configurable_and_exact() {
    let mut config = test_config();
    config.allowed_origins = Some(vec!["https://app.example.com".into()]);
    let app = TestApp::with_config(config).await;
    app.sign_up("ned").await;
    assert_eq!(
        app.cookie_login_response("ned", PASSWORD, &[("origin", "https://app.example.com")])
            .await
            .status,
        200
    );
    for origin in [
        "https://app.example.com:443",
        "https://APP.example.com.evil",
        "http://app.example.com",
        ORIGIN,
    ] {
        app.cookie_login_response("ned", PASSWORD, &[("origin", origin)])
            .await
            .assert_error(403, "csrf_failed");
    }
}

/// A refused origin is the usual symptom of a wrong `issuer` or `allowed_origins`: the reason and
/// the origin are logged (security target, visible at the default level), not only answered.
#[tokio::test]
async fn csrf_refusals_are_logged_with_their_reason_and_origin() {
    let captured = crate::observability::captured_logs().clone();
    let app = TestApp::new().await;
    app.sign_up("csrflog").await;
    let probe = "http://csrf-log-probe.example:4711";
    app.cookie_login_response("csrflog", PASSWORD, &[("origin", probe)])
        .await
        .assert_error(403, "csrf_failed");
    let logs = captured.text();
    let line = logs
        .lines()
        .find(|l| l.contains("csrf-log-probe.example:4711"))
        .unwrap_or_else(|| panic!("no log line names the refused origin"));
    assert!(
        line.contains("WARN") && line.contains("latchkey::security"),
        "{line}"
    );
    assert!(
        line.contains("the request's Origin is not allowed"),
        "{line}"
    );
}
