//! Browser apps (API.md "Browser apps"): CORS on the token-mode endpoints from each client's
//! `allowed_origins`, and `POST /v1/session/token` for same-site apps with a cookie session.
use crate::harness::*;
use latchkey_server::config::{ClientConfig, Config};
use serde_json::{Value, json};

const EVIL: &str = "http://evil.example";
const OTHER_ORIGIN: &str = "http://127.0.0.1:6001";

/// The test clients plus a second public client with an origin of its own.
fn config() -> Config {
    let mut config = test_config();
    config.clients.push(ClientConfig {
        id: "other".into(),
        audience: "other-api".into(),
        scopes: vec!["read".into()],
        allowed_origins: vec![OTHER_ORIGIN.into()],
        ..ClientConfig::default()
    });
    config
}

fn preflight<'a>(origin: &'a str, headers: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("origin", origin),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", headers),
    ]
}

fn varies_by_origin(r: &Response) -> bool {
    r.headers
        .get_all("vary")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("origin"))
        })
}

fn no_cors_headers(r: &Response, what: &str) {
    for name in [
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert_eq!(r.header(name), None, "{what}: {name} must be absent");
    }
}

#[tokio::test]
async fn preflights_from_a_listed_origin_get_204_with_exact_headers_and_no_credentials() {
    let app = TestApp::with_config(config()).await;
    for path in ["/oauth/token", "/oauth/revoke"] {
        for origin in [SPA_ORIGIN, OTHER_ORIGIN] {
            let r = app
                .call("OPTIONS", path, &preflight(origin, "content-type"), None)
                .await;
            assert_eq!(r.status, 204, "{path} from {origin}: {}", r.text());
            assert_eq!(r.header("access-control-allow-origin"), Some(origin));
            assert!(varies_by_origin(&r), "{path}: Vary: Origin");
            let methods = r.header("access-control-allow-methods").expect("methods");
            assert!(methods.contains("POST"), "{methods}");
            let allowed = r.header("access-control-allow-headers").expect("headers");
            assert!(allowed.to_ascii_lowercase().contains("content-type"));
            assert!(allowed.to_ascii_lowercase().contains("authorization"));
            assert!(r.header("access-control-max-age").is_some());
            assert_eq!(
                r.header("access-control-allow-credentials"),
                None,
                "the OAuth endpoints never take cookies"
            );
        }
    }
}

#[tokio::test]
async fn an_unlisted_origin_gets_no_cors_headers_anywhere() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    for path in [
        "/oauth/token",
        "/oauth/revoke",
        "/v1/session/token",
        "/v1/session",
    ] {
        let r = app
            .call("OPTIONS", path, &preflight(EVIL, "content-type"), None)
            .await;
        assert!(r.status.is_client_error(), "{path}: {}", r.status);
        no_cors_headers(&r, path);
    }
    // Look-alikes of the listed origin: exact comparison only, no prefix, suffix or case games.
    for trick in [
        "http://127.0.0.1:51730",
        "http://127.0.0.1:5173.evil.example",
        "http://127.0.0.1:5173/",
        "HTTP://127.0.0.1:5173",
        "https://127.0.0.1:5173",
        "http://127.0.0.1",
    ] {
        let r = app
            .call(
                "OPTIONS",
                "/oauth/token",
                &preflight(trick, "content-type"),
                None,
            )
            .await;
        r.assert_error(403, "forbidden");
        no_cors_headers(&r, trick);
    }
    // "null" (sandboxed frames, file: pages) is never a listed origin.
    let r = app
        .call(
            "OPTIONS",
            "/oauth/token",
            &preflight("null", "content-type"),
            None,
        )
        .await;
    r.assert_error(403, "forbidden");
    no_cors_headers(&r, "null origin");
    // Ordinary requests too: readable only by Latchkey's own origin (no CORS at all).
    for path in ["/healthz", "/.well-known/jwks.json", "/v1/revocations"] {
        let r = app.get(path, &[("origin", EVIL)]).await;
        no_cors_headers(&r, path);
    }
    // The browser app's origin is not a CORS origin for the rest of the API either.
    for path in ["/v1/sessions", "/v1/me"] {
        let r = app.get(path, &[("origin", SPA_ORIGIN)]).await;
        no_cors_headers(&r, path);
    }
}

#[tokio::test]
async fn a_public_clients_origin_may_read_the_session_but_not_log_in_or_out() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    // Reading the session (for its CSRF token), with credentials.
    let r = app
        .call(
            "OPTIONS",
            "/v1/session",
            &preflight(SPA_ORIGIN, "content-type"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-methods"), Some("GET"));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let r = app
        .get(
            "/v1/session",
            &[("origin", SPA_ORIGIN), ("cookie", &b.cookie)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    // Logging in or out from there stays refused, and unreadable.
    let r = app
        .cookie_login_response("alice", PASSWORD, &[("origin", SPA_ORIGIN)])
        .await;
    r.assert_error(403, "csrf_failed");
    no_cors_headers(&r, "login from the SPA origin");
    let r = app
        .call(
            "DELETE",
            "/v1/session",
            &[
                ("origin", SPA_ORIGIN),
                ("cookie", &b.cookie),
                ("x-csrf-token", &b.csrf),
            ],
            None,
        )
        .await;
    r.assert_error(403, "csrf_failed");
    no_cors_headers(&r, "logout from the SPA origin");
    // A confidential client's origin (none here) or an unlisted one: nothing.
    let r = app
        .get("/v1/session", &[("origin", EVIL), ("cookie", &b.cookie)])
        .await;
    no_cors_headers(&r, "unlisted origin");
}

#[tokio::test]
async fn token_requests_from_a_listed_origin_are_readable_and_from_others_refused() {
    let app = TestApp::with_config(config()).await;
    let pair = app.login("alice").await;

    // The SPA refreshes from its own origin: CORS headers, no credentials.
    let r = app
        .post_form_with(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &pair.refresh),
                ("client_id", "spa"),
            ],
            &[("origin", SPA_ORIGIN)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert!(varies_by_origin(&r));
    let current = r.str_field("refresh_token");

    // A page on another client's origin cannot act as `spa`, nor can an unlisted page.
    for origin in [OTHER_ORIGIN, EVIL, "null"] {
        let r = app
            .post_form_with(
                "/oauth/token",
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &current),
                    ("client_id", "spa"),
                ],
                &[("origin", origin)],
            )
            .await;
        r.assert_error(401, "invalid_client");
        if origin != OTHER_ORIGIN {
            no_cors_headers(&r, origin);
        }
    }
    // Nothing was consumed by the refused requests: the token still rotates (no Origin: a
    // server-side client is not affected).
    let r = app.refresh(&current).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Revocation from a foreign origin is refused as well, and revokes nothing.
    let fresh = app.login_again("alice").await;
    let r = app
        .post_form_with(
            "/oauth/revoke",
            &[("token", &fresh.refresh), ("client_id", "spa")],
            &[("origin", EVIL)],
        )
        .await;
    r.assert_error(401, "invalid_client");
    assert_eq!(app.refresh(&fresh.refresh).await.status, 200);
}

/// `POST /v1/session/token {"client_id":"spa"}` as the browser `b` on `origin`.
async fn session_token(app: &TestApp, b: &Browser, origin: &str) -> Response {
    app.call(
        "POST",
        "/v1/session/token",
        &session_token_headers(b, origin),
        Some(&json!({"client_id": "spa"})),
    )
    .await
}

/// What a same-site app's `fetch(..., {credentials: "include"})` sends.
fn session_token_headers<'a>(b: &'a Browser, origin: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("cookie", &b.cookie),
        ("origin", origin),
        ("sec-fetch-site", "same-site"),
        ("x-csrf-token", &b.csrf),
    ]
}

#[tokio::test]
async fn session_token_gives_a_same_site_app_an_access_token_and_no_refresh_token() {
    let app = TestApp::with_config(config()).await;
    let user = app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let r = session_token(&app, &b, SPA_ORIGIN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let body = r.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "expires_in", "scope", "token_type"]);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read write");
    assert_eq!(body["expires_in"], 900);
    let token = body["access_token"].as_str().expect("token");
    let header = jwt_part(token, 0);
    assert_eq!(header["typ"], "at+jwt");
    let claims = jwt_part(token, 1);
    assert_eq!(claims["aud"], "api");
    assert_eq!(claims["client_id"], "spa");
    assert_eq!(claims["sub"], user["id"]);
    assert_eq!(
        claims["sid"],
        b.sid.as_str(),
        "the token belongs to the cookie session"
    );

    // The issuer's own origin may ask too, and a narrower scope is honoured.
    let r = app
        .call(
            "POST",
            "/v1/session/token",
            &session_token_headers(&b, ORIGIN),
            Some(&json!({"client_id": "spa", "scope": "read"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["scope"], "read");
}

#[tokio::test]
async fn session_token_keeps_the_cookie_modes_csrf_defences() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let body = json!({"client_id": "spa"});
    let post = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        let body = body.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.call("POST", "/v1/session/token", &headers, Some(&body))
                .await
        }
    };
    let cookie = b.cookie.clone();
    let csrf = b.csrf.clone();
    // No cookie: 401.
    post(vec![
        ("origin", SPA_ORIGIN.into()),
        ("x-csrf-token", csrf.clone()),
    ])
    .await
    .assert_error(401, "unauthorized");
    // No CSRF token, a wrong one: 403.
    post(vec![
        ("cookie", cookie.clone()),
        ("origin", SPA_ORIGIN.into()),
    ])
    .await
    .assert_error(403, "csrf_failed");
    post(vec![
        ("cookie", cookie.clone()),
        ("origin", SPA_ORIGIN.into()),
        ("x-csrf-token", "A".repeat(43)),
    ])
    .await
    .assert_error(403, "csrf_failed");
    // An origin the client does not list (even another client's), or a cross-site request.
    for origin in [EVIL, OTHER_ORIGIN, "null"] {
        let r = post(vec![
            ("cookie", cookie.clone()),
            ("origin", origin.into()),
            ("x-csrf-token", csrf.clone()),
        ])
        .await;
        r.assert_error(403, "csrf_failed");
        if origin != OTHER_ORIGIN {
            no_cors_headers(&r, origin);
        }
    }
    post(vec![
        ("cookie", cookie.clone()),
        ("sec-fetch-site", "cross-site".into()),
        ("x-csrf-token", csrf.clone()),
    ])
    .await
    .assert_error(403, "csrf_failed");
}

#[tokio::test]
async fn session_token_is_for_known_public_clients_and_their_scopes_only() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let call = |body: Value| {
        let app = &app;
        let headers = session_token_headers(&b, ORIGIN);
        async move {
            app.call("POST", "/v1/session/token", &headers, Some(&body))
                .await
        }
    };
    call(json!({"client_id": "nobody"}))
        .await
        .assert_error(401, "invalid_client");
    call(json!({"client_id": "backend"}))
        .await
        .assert_error(400, "unauthorized_client");
    call(json!({"client_id": "spa", "scope": "admin"}))
        .await
        .assert_error(400, "invalid_scope");
    call(json!({})).await.assert_error(400, "invalid_request");
    call(json!({"client_id": "spa", "refresh": true}))
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn ending_the_cookie_session_puts_its_minted_tokens_on_the_feed() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let r = session_token(&app, &b, SPA_ORIGIN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let exp = jwt_part(&r.str_field("access_token"), 1)["exp"]
        .as_i64()
        .expect("exp");
    let r = app.as_browser(&b, "DELETE", "/v1/session", None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let feed = app.get("/v1/revocations", &[]).await.json();
    let entry = feed["revoked"]
        .as_array()
        .expect("revoked")
        .iter()
        .find(|e| e["sid"] == b.sid.as_str())
        .cloned()
        .expect("the cookie session is on the feed");
    assert!(
        entry["exp"].as_i64().expect("exp") >= exp,
        "the feed remembers the session at least as long as its tokens live"
    );
    // And no new token for the ended session.
    session_token(&app, &b, SPA_ORIGIN)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn session_token_preflight_allows_credentials_for_public_client_origins_only() {
    let app = TestApp::with_config(config()).await;
    let r = app
        .call(
            "OPTIONS",
            "/v1/session/token",
            &preflight(SPA_ORIGIN, "content-type, x-csrf-token"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
    let allowed = r
        .header("access-control-allow-headers")
        .expect("headers")
        .to_ascii_lowercase();
    assert!(allowed.contains("x-csrf-token"), "{allowed}");
}

#[test]
fn client_origins_must_be_exact_origins() {
    for bad in [
        "http://127.0.0.1:5173/",
        "http://127.0.0.1:5173/callback",
        "https://*.example.com",
        "*",
        "127.0.0.1:5173",
    ] {
        let mut config = config();
        config.clients[0].allowed_origins = vec![bad.into()];
        let err = config.validate().expect_err(bad).to_string();
        assert!(err.contains("clients[0].allowed_origins"), "{bad}: {err}");
    }
}

/// API.md: tokens minted by `POST /v1/session/token` for a resource audience never manage the
/// account, even for a client with `account_api = true`.
#[tokio::test]
async fn session_tokens_cannot_manage_the_account() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let r = session_token(&app, &b, SPA_ORIGIN).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let bearer = format!("Bearer {}", r.str_field("access_token"));
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/sessions"),
        ("POST", "/v1/sessions/revoke-others"),
    ] {
        app.call(method, path, &[("authorization", &bearer)], None)
            .await
            .assert_error(401, "unauthorized");
    }
    // The cookie session itself is untouched and still manages the account.
    let r = app
        .call("GET", "/v1/me", &[("cookie", &b.cookie)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Cookie-carrying CORS (`/v1/session/token`, `GET /v1/session`) is for public clients' origins
/// only: a confidential client's listed origin may call the OAuth endpoints, never with the
/// session cookie.
#[tokio::test]
async fn a_confidential_clients_origin_never_gets_credentials() {
    const BACKEND_ORIGIN: &str = "http://127.0.0.1:6002";
    let mut config = config();
    config.clients[1].allowed_origins = vec![BACKEND_ORIGIN.into()];
    let app = TestApp::with_config(config).await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let r = app
        .call(
            "OPTIONS",
            "/oauth/token",
            &preflight(BACKEND_ORIGIN, "content-type"),
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some(BACKEND_ORIGIN)
    );
    for path in ["/v1/session/token", "/v1/session"] {
        let r = app
            .call(
                "OPTIONS",
                path,
                &preflight(BACKEND_ORIGIN, "content-type"),
                None,
            )
            .await;
        r.assert_error(403, "forbidden");
        no_cors_headers(&r, path);
    }
    let r = app
        .get(
            "/v1/session",
            &[("origin", BACKEND_ORIGIN), ("cookie", &b.cookie)],
        )
        .await;
    no_cors_headers(&r, "GET /v1/session from a confidential client's origin");
}
