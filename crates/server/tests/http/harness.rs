//! A test server: the real router over a chosen store, with a manual clock and cheap Argon2.
#![allow(dead_code)]
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use latchkey_core::ManualClock;
use latchkey_server::config::{ClientConfig, ClientKind, Config, Rate, Redacted};
use latchkey_server::{AppState, app};
use latchkey_store::Store;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

pub const PASSWORD: &str = "correct horse battery staple";
pub const BACKEND_SECRET: &str = "backend-secret-0123456789";
/// The browser origin the public test client `spa` lists in `allowed_origins`.
pub const SPA_ORIGIN: &str = "http://127.0.0.1:5173";

pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: ManualClock,
    pub store: Arc<dyn Store>,
    _guard: Option<tempfile::TempDir>,
}

/// A `grant_types` list.
pub fn grants(names: &[&str]) -> Vec<String> {
    names.iter().map(|g| g.to_string()).collect()
}

/// The configuration tests start from: two clients, cheap Argon2, no throttling.
pub fn test_config() -> Config {
    let mut config = Config::default();
    config.password.argon2_memory_kib = 64;
    config.password.argon2_iterations = 1;
    let off = Rate { per: None };
    config.rate_limit.login_per_account = off;
    config.rate_limit.login_per_ip = off;
    config.rate_limit.token_per_ip = off;
    config.clients = vec![
        ClientConfig {
            id: "spa".into(),
            audience: "api".into(),
            scopes: vec!["read".into(), "write".into()],
            grant_types: grants(&["password", "refresh_token", "authorization_code"]),
            allowed_origins: vec![SPA_ORIGIN.into()],
            ..ClientConfig::default()
        },
        ClientConfig {
            id: "backend".into(),
            kind: ClientKind::Confidential,
            secret: Some(Redacted(BACKEND_SECRET.into())),
            audience: "internal".into(),
            scopes: vec!["read".into()],
            grant_types: grants(&["password", "refresh_token"]),
            ..ClientConfig::default()
        },
    ];
    config
}

pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the standard error body with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text());
        let body = self.json();
        assert_eq!(body["error"], code, "body: {body}");
        assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|d| !d.is_empty()),
            "body: {body}"
        );
        assert_eq!(
            body.as_object().map(|o| o.len()),
            Some(2),
            "extra fields: {body}"
        );
        body
    }

    pub fn str_field(&self, field: &str) -> String {
        self.json()[field]
            .as_str()
            .unwrap_or_else(|| panic!("no string {field:?} in {}", self.text()))
            .to_string()
    }
}

/// A token pair from a successful grant.
#[derive(Debug, Clone)]
pub struct Pair {
    pub access: String,
    pub refresh: String,
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with_config(test_config()).await
    }

    pub async fn with_config(config: Config) -> Self {
        Self::build(config, Arc::new(latchkey_store::MemoryStore::new()), None).await
    }

    /// The same app on a fresh SQLite file.
    pub async fn sqlite(config: Config) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("latchkey.db").display());
        let store = latchkey_store::SqliteStore::connect(&url)
            .await
            .expect("SQLite");
        Self::build(config, Arc::new(store), Some(dir)).await
    }

    pub async fn build(
        config: Config,
        store: Arc<dyn Store>,
        guard: Option<tempfile::TempDir>,
    ) -> Self {
        crate::observability::captured_logs();
        let clock = ManualClock::starting_now();
        let state = AppState::new(config, store.clone(), Arc::new(clock.clone()))
            .await
            .expect("state");
        // Forward auth fails closed until the revocation log has been read: read it now and
        // keep following it, as `serve` does.
        state
            .follower
            .poll_once(&state)
            .await
            .expect("read the revocation log");
        latchkey_server::feed::spawn_follower(&state);
        Self {
            router: app(state.clone()),
            state,
            clock,
            store,
            _guard: guard,
        }
    }

    pub async fn send(&self, request: Request<Body>) -> Response {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Response {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut builder = Request::builder().method(Method::GET).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.send(builder.body(Body::empty()).expect("request"))
            .await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.post_raw(path, "application/json", body.to_string().into_bytes(), &[])
            .await
    }

    pub async fn post_form(&self, path: &str, params: &[(&str, &str)]) -> Response {
        self.post_form_with(path, params, &[]).await
    }

    pub async fn post_form_with(
        &self,
        path: &str,
        params: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let body = serde_urlencoded::to_string(params).expect("form");
        self.post_raw(
            path,
            "application/x-www-form-urlencoded",
            body.into_bytes(),
            headers,
        )
        .await
    }

    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        self.send(builder.body(Body::from(body)).expect("request"))
            .await
    }

    pub async fn sign_up(&self, username: &str) -> Value {
        let r = self
            .post_json(
                "/v1/users",
                &serde_json::json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        r.json()
    }

    pub async fn password_grant(
        &self,
        username: &str,
        password: &str,
        client_id: &str,
    ) -> Response {
        self.post_form(
            "/oauth/token",
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", password),
                ("client_id", client_id),
            ],
        )
        .await
    }

    /// Signs `username` up and logs in with the public client.
    pub async fn login(&self, username: &str) -> Pair {
        self.sign_up(username).await;
        self.login_again(username).await
    }

    /// Another login (another session) of an existing user.
    pub async fn login_again(&self, username: &str) -> Pair {
        let r = self.password_grant(username, PASSWORD, "spa").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        Pair {
            access: r.str_field("access_token"),
            refresh: r.str_field("refresh_token"),
        }
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.refresh_as(refresh_token, "spa").await
    }

    pub async fn refresh_as(&self, refresh_token: &str, client_id: &str) -> Response {
        self.post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ],
        )
        .await
    }

    /// Refreshes and expects success.
    pub async fn rotate(&self, refresh_token: &str) -> Pair {
        let r = self.refresh(refresh_token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        Pair {
            access: r.str_field("access_token"),
            refresh: r.str_field("refresh_token"),
        }
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get(
            "/v1/me",
            &[("authorization", &format!("Bearer {access_token}"))],
        )
        .await
    }
}

/// Decodes a JWT segment (header 0, claims 1) without verifying: for asserting shapes.
pub fn jwt_part(token: &str, index: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("segment");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// A logged-in browser, as far as the server can tell: the cookie and the CSRF token.
#[derive(Debug, Clone)]
pub struct Browser {
    pub cookie: String,
    pub csrf: String,
    pub sid: String,
}

pub const ORIGIN: &str = "http://127.0.0.1:8080";

impl TestApp {
    /// Sends `method path` with extra headers and an optional JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        json: Option<&Value>,
    ) -> Response {
        let mut builder = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let body = match json {
            Some(v) => {
                builder = builder.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        self.send(builder.body(body).expect("request")).await
    }

    pub async fn cookie_login_response(
        &self,
        username: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        self.call(
            "POST",
            "/v1/session",
            headers,
            Some(&serde_json::json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs an existing user in with cookie mode.
    pub async fn browser_login(&self, username: &str) -> Browser {
        let r = self
            .cookie_login_response(username, PASSWORD, &[("origin", ORIGIN)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let set_cookie = r.header("set-cookie").expect("Set-Cookie").to_string();
        let cookie = set_cookie.split(';').next().expect("pair").to_string();
        let body = r.json();
        Browser {
            cookie,
            csrf: body["csrf_token"].as_str().expect("csrf_token").to_string(),
            sid: body["session"]["id"].as_str().expect("id").to_string(),
        }
    }

    /// A request as the browser would send it: cookie, same-origin, CSRF token.
    pub async fn as_browser(
        &self,
        b: &Browser,
        method: &str,
        path: &str,
        json: Option<&Value>,
    ) -> Response {
        self.call(
            method,
            path,
            &[
                ("cookie", &b.cookie),
                ("origin", ORIGIN),
                ("sec-fetch-site", "same-origin"),
                ("x-csrf-token", &b.csrf),
            ],
            json,
        )
        .await
    }

    /// Only the cookie: what a cross-site forgery could make a browser send.
    pub async fn with_cookie_only(
        &self,
        b: &Browser,
        method: &str,
        path: &str,
        json: Option<&Value>,
    ) -> Response {
        self.call(method, path, &[("cookie", &b.cookie)], json)
            .await
    }
}
