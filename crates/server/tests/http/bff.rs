//! The Backend-for-Frontend proxy (docs/bff.md) against an echo upstream started here on
//! 127.0.0.1:0 that records every request it receives: tokens, header cleaning both ways,
//! CSRF, 401s and path escapes with zero upstream hits, streamed bodies, 502/504,
//! revocation, and an end-to-end run of the demo SPA in headless Chromium.
use crate::browser::{Chromedriver, browser_available, click, eventually, fill, run};
use crate::harness::*;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response as AxumResponse};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use latchkey_core::{Clock, SessionId};
use latchkey_server::config::{BffRoute, Config, Ttl};
use latchkey_server::{AppState, app};
use latchkey_store::testing::FlakyStore;
use latchkey_tokens::{AccessTokenClaims, Validation};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tower::ServiceExt;

const MB: usize = 1024 * 1024;
const COOKIE_NAME: &str = "__Host-latchkey";

// ---------------------------------------------------------------------------------------------
// The echo upstream.

/// One request as the upstream received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The token of `Authorization: Bearer <token>`.
    fn token(&self) -> String {
        self.header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_else(|| panic!("no Bearer token upstream: {self:?}"))
            .to_string()
    }
}

#[derive(Clone, Default)]
struct Upstream {
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Opened by the test: the rest of `/download-gate` may be sent.
    gate: Arc<Notify>,
    /// Signalled by `/upload-gate` when the first chunk of the body has arrived.
    first_chunk: Arc<Notify>,
}

impl Upstream {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .expect("lock")
            .last()
            .cloned()
            .expect("the upstream saw a request")
    }
}

async fn record(
    State(up): State<Upstream>,
    request: Request,
    next: axum::middleware::Next,
) -> AxumResponse {
    up.hits.fetch_add(1, Ordering::SeqCst);
    up.seen.lock().expect("lock").push(Seen {
        method: request.method().to_string(),
        uri: request.uri().to_string(),
        headers: request.headers().clone(),
    });
    next.run(request).await
}

/// Echoes what it received, except the token itself: its claims, decoded (a real API would
/// verify it; the tests verify it themselves).
async fn echo(request: Request) -> AxumResponse {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .filter(|(name, _)| *name != "authorization")
        .map(|(n, v)| (n.to_string(), json!(v.to_str().unwrap_or("<binary>"))))
        .collect();
    let claims = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| jwt_part(t, 1));
    axum::Json(json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "token_claims": claims,
        "body": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// Counts the bytes of a streamed upload (and a checksum), without keeping them.
async fn upload(request: Request) -> AxumResponse {
    let mut stream = request.into_body().into_data_stream();
    let (mut bytes, mut sum) = (0usize, 0u64);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        bytes += chunk.len();
        sum = chunk.iter().fold(sum, |s, b| s.wrapping_add(u64::from(*b)));
    }
    axum::Json(json!({"bytes": bytes, "sum": sum})).into_response()
}

/// Like `upload`, and says when the first chunk arrived (before the client finished).
async fn upload_gate(State(up): State<Upstream>, request: Request) -> AxumResponse {
    let mut stream = request.into_body().into_data_stream();
    let mut bytes = 0usize;
    let mut first = true;
    while let Some(chunk) = stream.next().await {
        bytes += chunk.expect("chunk").len();
        if first {
            first = false;
            up.first_chunk.notify_one();
        }
    }
    axum::Json(json!({"bytes": bytes})).into_response()
}

fn pattern(offset: usize, len: usize) -> Bytes {
    (offset..offset + len)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `?bytes=N`: N bytes of a pattern, in 64 KiB chunks, generated as they are sent.
async fn download(request: Request) -> AxumResponse {
    let n: usize = request
        .uri()
        .query()
        .and_then(|q| q.strip_prefix("bytes="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let stream = futures_util::stream::unfold(0usize, move |sent| async move {
        (sent < n).then(|| {
            let len = (64 * 1024).min(n - sent);
            (Ok::<_, std::io::Error>(pattern(sent, len)), sent + len)
        })
    });
    Body::from_stream(stream).into_response()
}

/// 1000 bytes, then nothing until the test opens the gate, then 1000 more.
async fn download_gate(State(up): State<Upstream>) -> AxumResponse {
    let stream = futures_util::stream::unfold(0u8, move |step| {
        let up = up.clone();
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; 1000])), 1)),
                1 => {
                    up.gate.notified().await;
                    Some((Ok(Bytes::from(vec![b'b'; 1000])), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(stream).into_response()
}

/// Misbehaves: tries to set Latchkey's cookie, echoes the token in a header, sends
/// hop-by-hop headers and a CORS policy that would open the answer to another origin.
async fn leaky(headers: HeaderMap) -> AxumResponse {
    let auth = headers
        .get("authorization")
        .cloned()
        .unwrap_or_else(|| axum::http::HeaderValue::from_static("none"));
    let mut response = axum::Json(json!({"ok": true})).into_response();
    let h = response.headers_mut();
    h.append(
        "set-cookie",
        format!("{COOKIE_NAME}=evil; Path=/").parse().expect("v"),
    );
    h.append("set-cookie", "theirs=1; Path=/".parse().expect("v"));
    h.insert("x-echo-authorization", auth);
    h.insert("connection", "x-hop".parse().expect("v"));
    h.insert("x-hop", "1".parse().expect("v"));
    h.insert("keep-alive", "timeout=5".parse().expect("v"));
    h.insert("x-kept", "yes".parse().expect("v"));
    h.insert(
        "access-control-allow-origin",
        "https://evil.example".parse().expect("v"),
    );
    h.insert(
        "access-control-allow-credentials",
        "true".parse().expect("v"),
    );
    response
}

async fn start_upstream() -> (Upstream, String) {
    let up = Upstream::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind upstream");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let router = Router::new()
        .route(
            "/base/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "late"
            }),
        )
        .route("/base/upload", axum::routing::post(upload))
        .route("/base/upload-gate", axum::routing::post(upload_gate))
        .route("/base/download", axum::routing::get(download))
        .route("/base/download-gate", axum::routing::get(download_gate))
        .route("/base/leaky", axum::routing::get(leaky))
        .fallback(echo)
        .layer(axum::middleware::from_fn_with_state(up.clone(), record))
        .with_state(up.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (up, base)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// The server under test.

fn route(prefix: &str, upstream: String, audience: &str, scopes: &[&str]) -> BffRoute {
    BffRoute {
        prefix: prefix.into(),
        upstream,
        audience: audience.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

/// `/api/` → `<upstream>/base/` (audience `api`, scope `read`), `/other/` → `<upstream>/`
/// (audience `other`), `/down/` → a closed port; 500 ms response timeout.
fn bff_config(upstream: &str) -> Config {
    let mut config = test_config();
    config.bff.routes = vec![
        route("/api/", format!("{upstream}/base/"), "api", &["read"]),
        route("/other/", format!("{upstream}/"), "other", &[]),
        route(
            "/down/",
            format!("http://127.0.0.1:{}/", closed_port()),
            "api",
            &[],
        ),
    ];
    config.bff.timeout = Ttl(Duration::from_millis(500));
    config.bff.strip_headers = vec!["x-internal-role".into()];
    config
}

struct Fixture {
    app: TestApp,
    up: Upstream,
    upstream: String,
}

async fn fixture() -> Fixture {
    let (up, upstream) = start_upstream().await;
    let app = TestApp::with_config(bff_config(&upstream)).await;
    Fixture { app, up, upstream }
}

impl Fixture {
    async fn user(&self, name: &str) -> Browser {
        self.app.sign_up(name).await;
        self.app.browser_login(name).await
    }

    /// Verifies a token as a resource server for `audience` would.
    fn verify(&self, token: &str, audience: &str) -> AccessTokenClaims {
        let validation = Validation {
            issuer: self.app.state.issuer.clone(),
            audience: Some(audience.into()),
            leeway_secs: 0,
            now: self.app.clock.now().unix_timestamp(),
        };
        self.app
            .state
            .keyring()
            .verify(token, &validation)
            .unwrap_or_else(|e| panic!("the upstream's token does not verify for {audience}: {e}"))
    }
}

fn sid(b: &Browser) -> SessionId {
    SessionId::parse(&b.sid).expect("sid")
}

/// Serves the app on a real socket (peer addresses, raw request lines).
async fn serve_socket(app: &TestApp) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let service = app
        .router
        .clone()
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    addr
}

/// Sends raw bytes and returns the status code and the whole response text.
async fn raw(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut text = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut text))
        .await
        .expect("the server answered")
        .expect("read");
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    (status, text)
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn forwards_with_a_bearer_token_for_the_route_audience_and_clean_headers() {
    let f = fixture().await;
    let b = f.user("alice").await;
    let user_id = f
        .app
        .get("/v1/session", &[("cookie", b.cookie.as_str())])
        .await
        .json()["session"]["user"]["id"]
        .as_str()
        .expect("user id")
        .to_string();
    let cookie = format!("theirs=1; {}; also=2", b.cookie);
    let r = f
        .app
        .call(
            "GET",
            "/api/users/42?x=1&y=%20z",
            &[
                ("host", "evil.example"),
                ("cookie", &cookie),
                ("authorization", "Bearer forged"),
                ("x-csrf-token", &b.csrf),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "gopher"),
                ("forwarded", "for=6.6.6.6"),
                ("x-real-ip", "6.6.6.6"),
                ("x-latchkey-user", "someone-else"),
                ("x-internal-role", "admin"),
                ("connection", "x-hop"),
                ("x-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("upgrade", "websocket"),
                ("proxy-authorization", "Basic eDp5"),
                ("accept", "application/json"),
                ("x-custom", "kept"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(f.up.hits(), 1);
    let seen = f.up.last();
    assert_eq!(seen.method, "GET");
    // The prefix is replaced by the upstream URL; the query passes unchanged.
    assert_eq!(seen.uri, "/base/users/42?x=1&y=%20z");
    let upstream_authority = f.upstream.trim_start_matches("http://");
    assert_eq!(seen.header("host"), Some(upstream_authority));

    let claims = f.verify(&seen.token(), "api");
    assert_eq!(claims.sub, user_id);
    assert_eq!(claims.sid, b.sid);
    assert_eq!(claims.aud, "api");
    assert_eq!(claims.scope, "read");
    assert_eq!(claims.client_id, latchkey_server::bff::BFF_CLIENT_ID);
    assert_eq!(claims.exp - claims.iat, 15 * 60);

    // Only the session cookie left the Cookie header.
    assert_eq!(seen.header("cookie"), Some("theirs=1; also=2"));
    for gone in [
        "x-csrf-token",
        "x-forwarded-for", // in-process: no peer address to state
        "forwarded",
        "x-real-ip",
        "x-latchkey-user",
        "x-internal-role",
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert_eq!(seen.header(gone), None, "{gone} reached the upstream");
    }
    // Forwarding facts are the proxy's, from the issuer, never from the request.
    assert_eq!(seen.header("x-forwarded-host"), Some("127.0.0.1:8080"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-prefix"), Some("/api"));
    assert_eq!(seen.header("accept"), Some("application/json"));
    assert_eq!(seen.header("x-custom"), Some("kept"));

    // The browser gets the upstream's answer, and no token anywhere in it.
    let body = r.json();
    assert_eq!(body["path"], "/base/users/42");
    assert_eq!(body["token_claims"]["aud"], "api");
    assert!(!r.text().contains(&seen.token()));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    // The other route: its own audience and base path.
    let r = f.app.as_browser(&b, "GET", "/other/things", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = f.up.last();
    assert_eq!(seen.uri, "/things");
    let claims = f.verify(&seen.token(), "other");
    assert_eq!(
        (claims.sid.as_str(), claims.scope.as_str()),
        (b.sid.as_str(), "")
    );
}

#[tokio::test]
async fn x_forwarded_for_is_the_peer_and_a_forged_host_changes_nothing() {
    let f = fixture().await;
    let b = f.user("host-forger").await;
    let addr = serve_socket(&f.app).await;
    let (status, text) = raw(
        addr,
        &format!(
            "GET /api/where HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-For: 6.6.6.6\r\n\
             X-Forwarded-Host: evil.example\r\nCookie: {}\r\nConnection: close\r\n\r\n",
            b.cookie
        ),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let seen = f.up.last();
    assert_eq!(seen.uri, "/base/where");
    assert_eq!(
        seen.header("host"),
        Some(f.upstream.trim_start_matches("http://"))
    );
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-host"), Some("127.0.0.1:8080"));
    assert_eq!(f.up.hits(), 1);
}

#[tokio::test]
async fn tokens_are_cached_per_session_and_audience_and_reminted_before_expiry() {
    let f = fixture().await;
    let b = f.user("cache-user").await;
    let cache = &f.app.state.bff.cache;
    let before = cache.minted();

    let mut tokens = Vec::new();
    for _ in 0..5 {
        let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
        tokens.push(f.up.last().token());
    }
    assert!(tokens.iter().all(|t| *t == tokens[0]), "minted per request");
    assert_eq!(cache.minted() - before, 1);
    assert!(cache.holds(&sid(&b)));
    let first = f.verify(&tokens[0], "api");

    // Concurrent requests of one session share one token.
    let c = f.user("concurrent-user").await;
    let minted = cache.minted();
    let calls = (0..20).map(|_| f.app.as_browser(&c, "GET", "/api/y", None));
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        cache.minted() - minted,
        1,
        "one token for 20 concurrent requests"
    );
    let c_token = f.up.last().token();
    assert_ne!(c_token, tokens[0], "another session, another token");

    // Another audience: another token, for the same session.
    let r = f.app.as_browser(&b, "GET", "/other/x", None).await;
    assert_eq!(r.status, 200);
    let other = f.up.last().token();
    assert_ne!(other, tokens[0]);
    assert_eq!(f.verify(&other, "other").sid, b.sid);

    // 13 minutes on, the token still has more than a minute: reused.
    f.app.clock.advance(time::Duration::minutes(13));
    let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(f.up.last().token(), tokens[0]);
    // Under a minute left: a new one, valid for the full lifetime again, then reused.
    f.app.clock.advance(time::Duration::seconds(90));
    let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
    assert_eq!(r.status, 200);
    let fresh = f.up.last().token();
    assert_ne!(fresh, tokens[0]);
    let fresh_claims = f.verify(&fresh, "api");
    assert!(
        fresh_claims.exp > first.exp,
        "{fresh_claims:?} vs {first:?}"
    );
    let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(f.up.last().token(), fresh);
}

#[tokio::test]
async fn responses_never_carry_the_token_our_cookie_or_hop_by_hop_headers() {
    let f = fixture().await;
    let b = f.user("leaky-user").await;
    let r = f.app.as_browser(&b, "GET", "/api/leaky", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = f.up.last().token();
    for (name, value) in &r.headers {
        let value = value.to_str().unwrap_or("");
        assert!(!value.contains(&token), "{name} carries the token");
    }
    assert!(!r.text().contains(&token));
    assert_eq!(r.header("x-echo-authorization"), None);
    let cookies: Vec<&str> = r
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        cookies,
        ["theirs=1; Path=/"],
        "the upstream set Latchkey's cookie"
    );
    assert_eq!(r.header("x-hop"), None);
    assert_eq!(r.header("keep-alive"), None);
    assert_eq!(r.header("access-control-allow-origin"), None);
    assert_eq!(r.header("access-control-allow-credentials"), None);
    assert_eq!(r.header("x-kept"), Some("yes"));
    // The session survived the upstream's attempt to overwrite the cookie.
    assert_eq!(
        f.app.as_browser(&b, "GET", "/api/x", None).await.status,
        200
    );
}

#[tokio::test]
async fn unsafe_methods_need_the_csrf_token_and_refusals_never_reach_the_upstream() {
    let f = fixture().await;
    let b = f.user("csrf-user").await;
    let body = json!({"n": 1});
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let refusals: [Vec<(&str, &str)>; 5] = [
            vec![("cookie", &b.cookie)],
            vec![("cookie", &b.cookie), ("x-csrf-token", "not-the-token")],
            vec![
                ("cookie", &b.cookie),
                (
                    "x-csrf-token",
                    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                ),
            ],
            vec![
                ("cookie", &b.cookie),
                ("x-csrf-token", &b.csrf),
                ("origin", "https://evil.example"),
            ],
            vec![
                ("cookie", &b.cookie),
                ("x-csrf-token", &b.csrf),
                ("sec-fetch-site", "cross-site"),
            ],
        ];
        for headers in &refusals {
            let r = f
                .app
                .call(method, "/api/things", headers, Some(&body))
                .await;
            r.assert_error(403, "csrf_failed");
        }
    }
    assert_eq!(f.up.hits(), 0, "a refused request reached the upstream");
    let r = f
        .app
        .as_browser(&b, "POST", "/api/things", Some(&body))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["body"], body.to_string());
    assert_eq!(f.up.last().header("x-csrf-token"), None);
    // Safe methods need only the cookie, like cookie mode.
    let r = f.app.with_cookie_only(&b, "GET", "/api/things", None).await;
    assert_eq!(r.status, 200);
    assert_eq!(f.up.hits(), 2);
}

#[tokio::test]
async fn no_valid_session_is_401_and_the_upstream_is_never_contacted() {
    let f = fixture().await;
    f.app.sign_up("bearer-user").await;
    let pair = f.app.login_again("bearer-user").await;
    let bearer = format!("Bearer {}", pair.access);
    let forged = format!("{COOKIE_NAME}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let garbage = format!("{COOKIE_NAME}=garbage");
    for headers in [
        vec![],
        vec![("cookie", "theirs=1")],
        vec![("cookie", garbage.as_str())],
        vec![("cookie", forged.as_str())],
        // A valid access token alone does not open a BFF route.
        vec![("authorization", bearer.as_str())],
    ] {
        for (method, path) in [("GET", "/api/x"), ("DELETE", "/api/x"), ("GET", "/other/")] {
            let r = f.app.call(method, path, &headers, None).await;
            r.assert_error(401, "unauthorized");
        }
    }
    assert_eq!(f.up.hits(), 0);
    // The token is fine for Latchkey's own API, so the 401 above was the BFF's rule.
    assert_eq!(f.app.me(&pair.access).await.status, 200);
}

#[tokio::test]
async fn path_escapes_are_refused_with_zero_upstream_hits() {
    let f = fixture().await;
    let b = f.user("escaper").await;
    let headers = [("cookie", b.cookie.as_str())];
    for path in [
        "/api/..",
        "/api/../v1/me",
        "/api/../../etc/passwd",
        "/api/a/../../x",
        "/api/./x",
        "/api/%2e%2e/x",
        "/api/%2E%2E/%2e%2e/x",
        "/api/.%2e/x",
        "/api/a%2f..%2f..%2fx",
        "/api/a%2Fb",
        "/api/a%5c..%5cx",
        "/api/%252e%252e/x",
        "/api/%252f",
        "/api/..;/x",
        "/api//evil.example/x",
        "/api/a//b",
        "/api/a%00b",
        "/api/%c0%ae%c0%ae/x",
        "/api/%zz",
        "http://evil.example/api/x",
        "http://127.0.0.1:8080/api/x",
    ] {
        let r = f.app.call("GET", path, &headers, None).await;
        r.assert_error(400, "invalid_request");
    }
    // Not under a prefix at all: Latchkey's 404, never the upstream.
    for path in ["/api", "/API/x", "/%61pi/x", "/v1/../api/x", "/nothing"] {
        let r = f.app.call("GET", path, &headers, None).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
    }
    assert_eq!(f.up.hits(), 0, "{:?}", f.up.seen.lock().expect("lock"));

    // The same over a real socket, with request lines no client library would send.
    let addr = serve_socket(&f.app).await;
    let upstream_authority = f.upstream.trim_start_matches("http://").to_string();
    for target in [
        "/api/..\\x".to_string(),
        "/api/a\\..\\..\\x".to_string(),
        "/api/%2e%2e%2fx".to_string(),
        "http://evil.example/api/x".to_string(),
        format!("http://{upstream_authority}/api/x"),
        format!("http://{upstream_authority}/base/x"),
    ] {
        let (status, text) = raw(
            addr,
            &format!(
                "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {}\r\nConnection: close\r\n\r\n",
                b.cookie
            ),
        )
        .await;
        assert!(status == 400 || status == 404, "{target}: {status} {text}");
    }
    assert_eq!(f.up.hits(), 0, "{:?}", f.up.seen.lock().expect("lock"));
}

#[tokio::test]
async fn large_bodies_stream_both_ways_past_the_64_kib_limit() {
    let (up, upstream) = start_upstream().await;
    let mut config = bff_config(&upstream);
    config.bff.max_body = latchkey_server::config::ByteSize(64 * MB as u64);
    let f = Fixture {
        app: TestApp::with_config(config).await,
        up,
        upstream,
    };
    let b = f.user("streamer").await;
    let total = 50 * MB;

    // Upload: 50 MB in 64 KiB chunks, generated as sent.
    let chunks = futures_util::stream::unfold(0usize, move |sent| async move {
        (sent < total).then(|| {
            let len = (64 * 1024).min(total - sent);
            (Ok::<_, std::io::Error>(pattern(sent, len)), sent + len)
        })
    });
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/upload")
        .header("cookie", &b.cookie)
        .header("origin", ORIGIN)
        .header("x-csrf-token", &b.csrf)
        .header("content-type", "application/octet-stream")
        .body(Body::from_stream(chunks))
        .expect("request");
    let r = f.app.send(request).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let expected_sum = (0..total).fold(0u64, |s, i| s.wrapping_add((i % 251) as u64));
    assert_eq!(r.json(), json!({"bytes": total, "sum": expected_sum}));

    // Download: 50 MB, read chunk by chunk.
    let request = axum::http::Request::builder()
        .uri(format!("/api/download?bytes={total}"))
        .header("cookie", &b.cookie)
        .body(Body::empty())
        .expect("request");
    let response = f
        .app
        .router
        .clone()
        .oneshot(request)
        .await
        .expect("response");
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body().into_data_stream();
    let mut received = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("chunk");
        assert_eq!(chunk, pattern(received, chunk.len()), "at {received}");
        received += chunk.len();
    }
    assert_eq!(received, total);
}

#[tokio::test]
async fn bodies_are_streamed_not_buffered() {
    let f = fixture().await;
    let b = f.user("gatekeeper").await;
    let wait = Duration::from_secs(5);

    // Download: the first part reaches the browser while the upstream still holds the rest.
    let request = axum::http::Request::builder()
        .uri("/api/download-gate")
        .header("cookie", &b.cookie)
        .body(Body::empty())
        .expect("request");
    let response = tokio::time::timeout(wait, f.app.router.clone().oneshot(request))
        .await
        .expect("the response started before the upstream finished")
        .expect("response");
    let mut stream = response.into_body().into_data_stream();
    let first = tokio::time::timeout(wait, stream.next())
        .await
        .expect("the first bytes arrived before the upstream finished")
        .expect("a chunk")
        .expect("chunk");
    assert_eq!(first[0], b'a');
    f.up.gate.notify_one();
    let mut rest = first.len();
    while let Some(chunk) = stream.next().await {
        rest += chunk.expect("chunk").len();
    }
    assert_eq!(rest, 2000);

    // Upload: the upstream sees the first chunk while the browser has not sent the rest.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let body = Body::from_stream(tokio_stream_from(rx));
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/upload-gate")
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .body(body)
        .expect("request");
    let router = f.app.router.clone();
    let call = tokio::spawn(async move { router.oneshot(request).await });
    tx.send(Ok(Bytes::from(vec![1u8; 70_000])))
        .await
        .expect("send");
    tokio::time::timeout(wait, f.up.first_chunk.notified())
        .await
        .expect("the upstream got the first chunk before the upload ended");
    tx.send(Ok(Bytes::from(vec![2u8; 30_000])))
        .await
        .expect("send");
    drop(tx);
    let response = call.await.expect("task").expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["bytes"], 100_000);
}

/// An mpsc receiver as a stream (no tokio-stream dependency).
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

#[tokio::test]
async fn an_unreachable_upstream_is_502_and_a_slow_one_504() {
    let f = fixture().await;
    let b = f.user("patient").await;
    let r = f.app.as_browser(&b, "GET", "/down/x", None).await;
    r.assert_error(502, "bad_gateway");
    let started = std::time::Instant::now();
    let r = f.app.as_browser(&b, "GET", "/api/slow", None).await;
    r.assert_error(504, "gateway_timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // The timeout counts from the end of the request body: an upload that takes longer than
    // the timeout is not a slow upstream.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/upload")
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .body(Body::from_stream(tokio_stream_from(rx)))
        .expect("request");
    let router = f.app.router.clone();
    let call = tokio::spawn(async move { router.oneshot(request).await });
    for _ in 0..4 {
        tx.send(Ok(Bytes::from_static(b"slow")))
            .await
            .expect("send");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(tx);
    let response = call.await.expect("task").expect("response");
    assert_eq!(response.status(), 200);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let body: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(body["bytes"], 16);
}

#[tokio::test]
async fn a_revoked_session_is_refused_at_once_and_its_tokens_are_dropped() {
    let f = fixture().await;
    let b = f.user("revokee").await;
    let other = f.app.browser_login("revokee").await;
    assert_eq!(
        f.app.as_browser(&b, "GET", "/api/x", None).await.status,
        200
    );
    assert!(f.app.state.bff.cache.holds(&sid(&b)));
    let hits = f.up.hits();

    let r = f
        .app
        .as_browser(&other, "DELETE", &format!("/v1/sessions/{}", b.sid), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(
        f.up.hits(),
        hits,
        "the revoked session reached the upstream"
    );
    // Its cached token goes with it (the revocation feed event).
    let cache = f.app.state.bff.cache.clone();
    let gone = sid(&b);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cache.holds(&gone) {
        assert!(
            std::time::Instant::now() < deadline,
            "the token outlived its session"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Logging out ends BFF access the same way.
    assert_eq!(
        f.app.as_browser(&other, "GET", "/api/x", None).await.status,
        200
    );
    let r = f
        .app
        .as_browser(&other, "DELETE", "/v1/session", None)
        .await;
    assert_eq!(r.status, 204);
    f.app
        .as_browser(&other, "GET", "/api/x", None)
        .await
        .assert_error(401, "unauthorized");
}

/// The BFF's tokens carry the user's roles; a role removal drops the cached token (its feed
/// entry), and the next request gets one with the new roles, the session untouched.
#[tokio::test]
async fn bff_tokens_carry_roles_and_a_removal_remints_them() {
    let f = fixture().await;
    let b = f.user("bff-roles").await;
    let session = f
        .app
        .get("/v1/session", &[("cookie", &b.cookie)])
        .await
        .json();
    let user =
        latchkey_core::UserId::parse(session["session"]["user"]["id"].as_str().expect("user id"))
            .expect("user id");
    let ttl = f.app.state.policy.access_ttl;
    let now = f.app.clock.now();
    let roles = |names: &[&str]| names.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    f.app
        .store
        .set_user_roles(user, &roles(&["admin", "reader"]), now, ttl)
        .await
        .expect("set roles");
    assert_eq!(
        f.app.as_browser(&b, "GET", "/api/x", None).await.status,
        200
    );
    let first = f.up.last().token();
    assert_eq!(f.verify(&first, "api").roles, roles(&["admin", "reader"]));

    f.app
        .store
        .set_user_roles(user, &roles(&["reader"]), now, ttl)
        .await
        .expect("remove a role");
    let cache = f.app.state.bff.cache.clone();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cache.holds(&sid(&b)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale token stayed cached"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f.app.clock.advance(time::Duration::seconds(1));
    assert_eq!(
        f.app.as_browser(&b, "GET", "/api/x", None).await.status,
        200
    );
    let next = f.up.last().token();
    assert_ne!(next, first);
    let claims = f.verify(&next, "api");
    assert_eq!(claims.roles, roles(&["reader"]));
    assert!(
        !f.app.state.follower.is_token_revoked(&sid(&b), claims.iat),
        "the new token is not stale"
    );
    assert!(
        f.app
            .state
            .follower
            .is_token_revoked(&sid(&b), f.verify(&first, "api").iat)
    );
}

/// Fail closed: without the store, no session, no upstream request.
#[tokio::test]
async fn a_store_outage_fails_closed_without_reaching_the_upstream() {
    let (up, upstream) = start_upstream().await;
    let flaky = Arc::new(FlakyStore::new(
        Arc::new(latchkey_store::MemoryStore::new()),
    ));
    let app = TestApp::build(bff_config(&upstream), flaky.clone(), None).await;
    app.sign_up("outage").await;
    let b = app.browser_login("outage").await;
    assert_eq!(app.as_browser(&b, "GET", "/api/x", None).await.status, 200);
    flaky.fail_reads(true);
    for method in ["GET", "POST"] {
        app.as_browser(&b, method, "/api/x", Some(&json!({})))
            .await
            .assert_error(503, "unavailable");
    }
    assert_eq!(up.hits(), 1);
    flaky.fail_reads(false);
    assert_eq!(app.as_browser(&b, "GET", "/api/x", None).await.status, 200);
}

/// `bff.session_cache`: a checked session is reused briefly, but a revocation still ends
/// BFF access at once on this instance, and within the feed's poll interval when it happens
/// elsewhere (here: written to the store directly, as another instance would).
#[tokio::test]
async fn with_the_session_cache_revocations_still_apply() {
    let (up, upstream) = start_upstream().await;
    let mut config = bff_config(&upstream);
    config.bff.session_cache = Ttl(Duration::from_secs(10));
    let flaky = Arc::new(FlakyStore::new(
        Arc::new(latchkey_store::MemoryStore::new()),
    ));
    let app = TestApp::build(config, flaky.clone(), None).await;
    app.sign_up("cached").await;
    let b = app.browser_login("cached").await;
    let other = app.browser_login("cached").await;
    assert_eq!(app.as_browser(&b, "GET", "/api/x", None).await.status, 200);
    // The session is reused without the store (which cannot answer for a moment).
    flaky.fail_reads(true);
    for _ in 0..3 {
        assert_eq!(app.as_browser(&b, "GET", "/api/x", None).await.status, 200);
    }
    flaky.fail_reads(false);
    // CSRF is checked on every request, cached session or not.
    app.with_cookie_only(&b, "POST", "/api/x", Some(&json!({})))
        .await
        .assert_error(403, "csrf_failed");

    // Revoked on this instance: refused on the very next request.
    let r = app
        .as_browser(&other, "DELETE", &format!("/v1/sessions/{}", b.sid), None)
        .await;
    assert_eq!(r.status, 204);
    app.as_browser(&b, "GET", "/api/x", None)
        .await
        .assert_error(401, "unauthorized");

    // Revoked "elsewhere": straight into the store, picked up from the feed.
    assert_eq!(
        app.as_browser(&other, "GET", "/api/x", None).await.status,
        200
    );
    let revocation = app.state.revocation(latchkey_core::RevokeReason::Logout);
    assert!(
        app.store
            .revoke_session(sid(&other), &revocation)
            .await
            .expect("revoke")
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let r = app.as_browser(&other, "GET", "/api/x", None).await;
        if r.status == 401 {
            break;
        }
        assert_eq!(r.status, 200);
        assert!(
            std::time::Instant::now() < deadline,
            "a session revoked elsewhere stayed usable"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hits = up.hits();
    app.as_browser(&other, "GET", "/api/x", None)
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(up.hits(), hits);
}

#[tokio::test]
async fn the_demo_page_is_off_unless_configured() {
    let f = fixture().await;
    f.app
        .get("/demo/", &[])
        .await
        .assert_error(404, "not_found");
    let mut config = bff_config(&f.upstream);
    config.bff.demo = true;
    let app = TestApp::with_config(config).await;
    let r = app.get("/demo/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/demo/demo.js"));
    assert_eq!(
        r.header("content-security-policy"),
        Some(latchkey_server::routes::pages::CONTENT_SECURITY_POLICY)
    );
    assert_eq!(app.get("/demo/demo.js", &[]).await.status, 200);
    assert_eq!(app.get("/demo", &[]).await.status, 303);
}

#[tokio::test]
async fn prefixes_that_overlap_latchkey_are_refused_at_start() {
    for prefix in [
        "/v1/",
        "/oauth/",
        "/admin/",
        "/.well-known/",
        "/login/",
        "/assets/",
        "/",
    ] {
        let mut config = test_config();
        config.bff.routes = vec![route(prefix, "http://127.0.0.1:9/".into(), "api", &[])];
        let err = config.validate().expect_err(prefix).to_string();
        assert!(err.contains("bff.routes[0].prefix"), "{prefix}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end in Chromium.

#[tokio::test(flavor = "multi_thread")]
async fn browser_demo_spa_calls_the_api_and_script_never_sees_a_token() {
    if !browser_available() {
        return;
    }
    let (up, upstream) = start_upstream().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("bff.db").display());
    let store = Arc::new(
        latchkey_store::SqliteStore::connect(&url)
            .await
            .expect("SQLite"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let mut config = bff_config(&upstream);
    config.issuer = Some(base.clone());
    config.bff.demo = true;
    let state = AppState::new(config, store, Arc::new(latchkey_core::SystemClock))
        .await
        .expect("state");
    latchkey_server::spawn_background_tasks(&state);
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "spa-user", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);

    let mut driver = Chromedriver::start();
    let browser = driver.connect().await;
    browser
        .goto(&format!("{base}/demo/"))
        .await
        .expect("open /demo/");
    eventually("the login form", || async {
        (run(
            &browser,
            "return !document.getElementById('login-section').hidden;",
        )
        .await
            == json!(true))
        .then_some(())
    })
    .await;
    fill(&browser, "username", "spa-user").await;
    fill(&browser, "password", PASSWORD).await;
    click(&browser, fantoccini::Locator::Id("login-button")).await;
    eventually("the signed-in view", || async {
        (run(
            &browser,
            "return document.getElementById('whoami').textContent;",
        )
        .await
            == json!("spa-user"))
        .then_some(())
    })
    .await;

    // GET through the BFF: the page shows the upstream's answer.
    click(&browser, fantoccini::Locator::Id("get-button")).await;
    let shown = eventually("the upstream's answer on the page", || async {
        let text = run(
            &browser,
            "return document.getElementById('result').textContent;",
        )
        .await;
        let text = text.as_str().unwrap_or("").to_string();
        text.contains("/base/hello").then_some(text)
    })
    .await;
    let answer: Value = serde_json::from_str(&shown).expect("JSON on the page");
    assert_eq!(answer["method"], "GET");
    assert_eq!(answer["query"], "from=spa");
    assert_eq!(answer["token_claims"]["aud"], "api");
    assert_eq!(answer["headers"].get("x-csrf-token"), None);
    // POST with the CSRF token from memory.
    click(&browser, fantoccini::Locator::Id("post-button")).await;
    eventually("the echoed POST body", || async {
        let text = run(
            &browser,
            "return document.getElementById('result').textContent;",
        )
        .await;
        text.as_str()
            .is_some_and(|t| t.contains("/base/echo") && t.contains("hello from the SPA"))
            .then_some(())
    })
    .await;
    assert_eq!(up.last().method, "POST");

    // The token the upstream received, looked for everywhere page script can read.
    let token = up.last().token();
    assert!(token.starts_with("eyJ"), "{token}");
    let found = browser
        .execute_async(
            r#"const [token, done] = [arguments[0], arguments[arguments.length - 1]];
               const jwt = /eyJ[\w-]+\.eyJ[\w-]+\.[\w-]+/;
               fetch('/api/hello', {credentials: 'same-origin'}).then(async r => {
                 const places = {
                   cookie: document.cookie,
                   localStorage: JSON.stringify(Object.entries(localStorage)),
                   sessionStorage: JSON.stringify(Object.entries(sessionStorage)),
                   dom: document.documentElement.outerHTML,
                   url: location.href + ' ' + document.referrer + ' ' + window.name,
                   resources: JSON.stringify(performance.getEntries().map(e => e.name)),
                   responseHeaders: JSON.stringify(Array.from(r.headers.entries())),
                   responseBody: await r.text(),
                 };
                 done({
                   status: r.status,
                   leaks: Object.entries(places)
                     .filter(([, v]) => v.includes(token) || jwt.test(v))
                     .map(([k]) => k),
                   cookie: document.cookie,
                 });
               }).catch(e => done({status: 0, leaks: [String(e)], cookie: ''}));"#,
            vec![json!(token)],
        )
        .await
        .expect("script");
    assert_eq!(found["status"], 200, "{found}");
    assert_eq!(
        found["leaks"],
        json!([]),
        "page script found a token: {found}"
    );
    assert!(
        !found["cookie"].as_str().unwrap_or("").contains("latchkey"),
        "document.cookie shows the session: {found}"
    );

    // Log out from the page: the BFF route closes.
    click(&browser, fantoccini::Locator::Id("logout")).await;
    eventually("the login form after logout", || async {
        (run(
            &browser,
            "return !document.getElementById('login-section').hidden;",
        )
        .await
            == json!(true))
        .then_some(())
    })
    .await;
    let hits = up.hits();
    let status = browser
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/hello').then(r => done(r.status)).catch(() => done(0));",
            vec![],
        )
        .await
        .expect("fetch after logout");
    assert_eq!(status, json!(401));
    assert_eq!(up.hits(), hits);

    browser.close().await.expect("close the browser");
    drop(driver);
}

#[tokio::test]
async fn metrics_label_proxied_requests_by_their_route_prefix() {
    let f = fixture().await;
    let b = f.user("metrics-bff-user").await;
    assert_eq!(
        f.app
            .as_browser(&b, "GET", "/api/metrics-probe", None)
            .await
            .status,
        200
    );
    let text = f.app.get("/metrics", &[]).await.text();
    assert!(
        text.lines()
            .any(|l| l.starts_with("latchkey_http_requests_total")
                && l.contains("route=\"bff:/api/\"")),
        "no BFF route label in:\n{}",
        text.lines()
            .filter(|l| l.starts_with("latchkey_http_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Headers that frameworks and auth proxies take on trust (path and method rewrites,
/// CDN client addresses, asserted users, `Via`) never reach the upstream from a browser.
#[tokio::test]
async fn identity_and_rewrite_headers_never_reach_the_upstream() {
    let f = fixture().await;
    let b = f.user("steerer").await;
    let forged = [
        ("x-original-url", "/admin/delete-everything"),
        ("x-rewrite-url", "/admin"),
        ("x-http-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
        ("x-method-override", "DELETE"),
        ("true-client-ip", "10.0.0.1"),
        ("x-client-ip", "10.0.0.1"),
        ("cf-connecting-ip", "10.0.0.1"),
        ("remote-user", "admin"),
        ("x-remote-user", "admin"),
        ("x-auth-request-user", "admin"),
        ("x-user", "admin"),
        ("via", "1.1 trusted-gateway"),
    ];
    let mut headers: Vec<(&str, &str)> = vec![("cookie", b.cookie.as_str())];
    headers.extend(forged);
    headers.push(("x-custom", "kept"));
    let r = f.app.call("GET", "/api/x", &headers, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = f.up.last();
    for (name, _) in forged {
        assert_eq!(seen.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(seen.header("x-custom"), Some("kept"));
}

fn limited_fixture_config(upstream: &str) -> Config {
    let mut config = bff_config(upstream);
    config.bff.max_body = latchkey_server::config::ByteSize(1024);
    config.bff.request_idle_timeout = Ttl(Duration::from_millis(300));
    config.bff.response_idle_timeout = Ttl(Duration::from_millis(300));
    config
}

/// `bff.max_body`: a declared length over it is 413 before the upstream is contacted; an
/// undeclared (streamed) body is cut off once it passes the limit, also 413.
#[tokio::test]
async fn bodies_over_bff_max_body_are_413() {
    let (up, upstream) = start_upstream().await;
    let app = TestApp::with_config(limited_fixture_config(&upstream)).await;
    app.sign_up("big").await;
    let b = app.browser_login("big").await;
    let request = |body: Body, length: Option<usize>| {
        let mut builder = axum::http::Request::builder()
            .method("POST")
            .uri("/api/upload")
            .header("cookie", &b.cookie)
            .header("x-csrf-token", &b.csrf)
            .header("content-type", "application/octet-stream");
        if let Some(length) = length {
            builder = builder.header("content-length", length);
        }
        builder.body(body).expect("request")
    };
    // Within the limit: forwarded.
    let r = app
        .send(request(Body::from(vec![7u8; 1024]), Some(1024)))
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["bytes"], 1024);
    let hits = up.hits();

    let r = app
        .send(request(Body::from(vec![7u8; 1025]), Some(1025)))
        .await;
    let body = r.assert_error(413, "payload_too_large");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("1024"),
        "{body}"
    );
    assert_eq!(
        up.hits(),
        hits,
        "a declared oversize body never reaches the upstream"
    );

    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 512]))),
    );
    let r = app.send(request(Body::from_stream(chunks), None)).await;
    r.assert_error(413, "payload_too_large");
}

/// `bff.request_idle_timeout`: a browser body that stops arriving is 408 (the upstream
/// request abandoned), not a connection held open for ever.
#[tokio::test]
async fn a_stalled_request_body_is_408() {
    let (_up, upstream) = start_upstream().await;
    let app = TestApp::with_config(limited_fixture_config(&upstream)).await;
    app.sign_up("staller").await;
    let b = app.browser_login("staller").await;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    tx.send(Ok(Bytes::from_static(b"first")))
        .await
        .expect("send");
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/api/upload")
        .header("cookie", &b.cookie)
        .header("x-csrf-token", &b.csrf)
        .body(Body::from_stream(tokio_stream_from(rx)))
        .expect("request");
    let started = std::time::Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(10), app.send(request))
        .await
        .expect("answered although the body never ended");
    r.assert_error(408, "request_timeout");
    assert!(started.elapsed() >= Duration::from_millis(300));
    drop(tx);
}

/// `bff.response_idle_timeout`: an upstream body that stops arriving is cut off; the
/// browser sees an error, never a truncated body passed off as complete.
#[tokio::test]
async fn a_stalled_response_body_is_cut_off() {
    let (_up, upstream) = start_upstream().await;
    let app = TestApp::with_config(limited_fixture_config(&upstream)).await;
    app.sign_up("waiter").await;
    let b = app.browser_login("waiter").await;
    let request = axum::http::Request::builder()
        .uri("/api/download-gate")
        .header("cookie", &b.cookie)
        .body(Body::empty())
        .expect("request");
    let response = app.router.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), 200);
    let collected = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stalled body ended");
    assert!(collected.is_err(), "a stalled body must end in an error");
}

/// Tokens the BFF mints are for the route's upstream only: never for Latchkey's own account
/// endpoints (401), and at forward auth only for their own audience when one is required.
#[tokio::test]
async fn bff_tokens_cannot_manage_the_account_or_pass_for_another_audience() {
    let f = fixture().await;
    let b = f.user("minted").await;
    let r = f.app.as_browser(&b, "GET", "/api/x", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {}", f.up.last().token());
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/sessions"),
        ("POST", "/v1/sessions/revoke-others"),
    ] {
        f.app
            .call(method, path, &[("authorization", &auth)], None)
            .await
            .assert_error(401, "unauthorized");
    }
    let bearer = [("authorization", auth.as_str())];
    assert_eq!(
        f.app.get("/v1/authorize?aud=api", &bearer).await.status,
        200
    );
    f.app
        .get("/v1/authorize?aud=other", &bearer)
        .await
        .assert_error(401, "unauthorized");
    // The session itself is untouched.
    let r = f.app.as_browser(&b, "GET", "/v1/sessions", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}
