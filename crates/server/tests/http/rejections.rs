//! Every route probed with bad path parameters, query strings and bodies: whatever is refused
//! is refused with the standard JSON error body, never axum's plain-text rejections, never 5xx.
use crate::harness::*;
use axum::body::Body;
use axum::http::Request;

const ADMIN: &str = "admin-token-for-rejections-01";

/// Every route of the router (method, path with `{id}` where a parameter goes).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/readyz"),
    ("GET", "/.well-known/oauth-authorization-server"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/v1/users"),
    ("GET", "/v1/me"),
    ("POST", "/v1/password"),
    ("POST", "/v1/session"),
    ("GET", "/v1/session"),
    ("DELETE", "/v1/session"),
    ("GET", "/v1/sessions"),
    ("POST", "/v1/sessions/revoke-others"),
    ("DELETE", "/v1/sessions/{id}"),
    ("GET", "/v1/revocations"),
    ("GET", "/v1/authorize"),
    ("POST", "/oauth/introspect"),
    ("POST", "/admin/v1/keys/rotate"),
    ("POST", "/admin/v1/users/{id}/ban"),
    ("POST", "/admin/v1/users/{id}/unban"),
    ("DELETE", "/admin/v1/users/{id}/sessions"),
    ("POST", "/oauth/token"),
    ("POST", "/oauth/revoke"),
    ("GET", "/login"),
    ("GET", "/account"),
    ("PUT", "/v1/users"),
    ("GET", "/no/such/route"),
];

const BAD_IDS: &[&str] = &["%FF", "%C3%28", "%00", "a%2Fb", "%E2%82"];
const BAD_QUERIES: &[&str] = &[
    "",
    "?after=%FF",
    "?after=1&after=2",
    "?after=-1",
    "?%FF=%FF",
    "?after",
    "?after=1%",
];

fn bodies() -> Vec<(Option<&'static [u8]>, Vec<u8>)> {
    vec![
        (None, Vec::new()),
        (None, b"{\"username\":1}".to_vec()),
        (Some(b"text/plain"), b"hello".to_vec()),
        (Some(b"application/json"), b"{not json".to_vec()),
        (Some(b"application/json"), b"[1,2,3]".to_vec()),
        (Some(b"application/json"), b"\xff\xfe".to_vec()),
        (
            Some(b"application/x-www-form-urlencoded"),
            b"a=%FF&a=1&%".to_vec(),
        ),
        (Some(b"application/json; charset=\xff"), b"{}".to_vec()),
        (Some(b"multipart/form-data; boundary=x"), b"--x--".to_vec()),
    ]
}

#[tokio::test]
async fn every_refusal_has_the_standard_json_body() {
    let mut config = test_config();
    config.admin_token = Some(latchkey_server::config::Redacted(ADMIN.into()));
    let app = TestApp::with_config(config).await;
    let t = app.login("rejections").await;
    let bearer = format!("Bearer {}", t.access);
    let mut checked = 0;
    for (method, route) in ROUTES {
        let auth = if route.starts_with("/admin/") {
            format!("Bearer {ADMIN}")
        } else {
            bearer.clone()
        };
        let paths: Vec<String> = if route.contains("{id}") {
            BAD_IDS.iter().map(|id| route.replace("{id}", id)).collect()
        } else {
            vec![route.to_string()]
        };
        for path in &paths {
            for query in BAD_QUERIES {
                for (content_type, body) in bodies() {
                    let mut builder = Request::builder()
                        .method(*method)
                        .uri(format!("{path}{query}"))
                        .header("authorization", auth.as_str())
                        .header("origin", ORIGIN);
                    if let Some(ct) = content_type {
                        let value = axum::http::HeaderValue::from_bytes(ct).expect("header value");
                        builder = builder.header("content-type", value);
                    }
                    let r = app
                        .send(builder.body(Body::from(body.clone())).expect("request"))
                        .await;
                    let what = format!(
                        "{method} {path}{query} ({:?}, {:?})",
                        content_type.map(String::from_utf8_lossy),
                        String::from_utf8_lossy(&body)
                    );
                    assert!(
                        !r.status.is_server_error(),
                        "{what}: {} {}",
                        r.status,
                        r.text()
                    );
                    if r.status.is_client_error() {
                        assert!(
                            r.header("content-type")
                                .is_some_and(|c| c.starts_with("application/json")),
                            "{what}: {} {:?} {}",
                            r.status,
                            r.header("content-type"),
                            r.text()
                        );
                        r.assert_error(
                            r.status.as_u16(),
                            r.json()["error"].as_str().unwrap_or("?"),
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 500, "only {checked} refusals probed");
}

#[tokio::test]
async fn path_and_query_rejections_name_the_problem() {
    let mut config = test_config();
    config.admin_token = Some(latchkey_server::config::Redacted(ADMIN.into()));
    let app = TestApp::with_config(config).await;
    let t = app.login("rejections2").await;
    let r = app
        .call(
            "DELETE",
            "/v1/sessions/%FF",
            &[("authorization", &format!("Bearer {}", t.access))],
            None,
        )
        .await;
    r.assert_error(400, "invalid_request");
    let r = app
        .call(
            "POST",
            "/admin/v1/users/%FF/ban",
            &[("authorization", &format!("Bearer {ADMIN}"))],
            None,
        )
        .await;
    r.assert_error(400, "invalid_request");
    let r = app.get("/v1/revocations?after=1&after=2", &[]).await;
    r.assert_error(400, "invalid_request");
    let r = app.get("/v1/revocations?after=%FF", &[]).await;
    r.assert_error(400, "invalid_request");
}
