//! The web pages: `/login` and `/account`, static HTML plus one script, in cookie mode.
//!
//! The session cookie is HttpOnly; the page script only ever holds the CSRF token (in memory),
//! which it gets from `GET /v1/session` and sends as `X-CSRF-Token`. A strict CSP allows only
//! this origin's script and style, no inline code, no framing.
use crate::routes::oauth_authorize::{error_page, safe_return_path};
use axum::Router;
use axum::extract::RawQuery;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const LOGIN_HTML: &str = include_str!("../../assets/login.html");
const ACCOUNT_HTML: &str = include_str!("../../assets/account.html");
const SCRIPT: &str = include_str!("../../assets/latchkey.js");
const STYLE: &str = include_str!("../../assets/latchkey.css");

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/account") }))
        .route("/login", get(login))
        .route(
            "/account",
            get(|| async { page(ACCOUNT_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/assets/latchkey.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/latchkey.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}

/// The login page. A `return_to` (where to go after logging in, set by `/oauth/authorize`)
/// must be a path on the issuer: anything else is refused here, never followed (the page
/// script applies the same rule).
async fn login(RawQuery(query): RawQuery) -> Response {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or_default()).unwrap_or_default();
    let returns: Vec<&str> = pairs
        .iter()
        .filter(|(name, _)| name == "return_to")
        .map(|(_, value)| value.as_str())
        .collect();
    if returns.len() > 1 || returns.iter().any(|r| !safe_return_path(r)) {
        return error_page("The page to return to after login is not on this site.");
    }
    page(LOGIN_HTML, "text/html; charset=utf-8")
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "permissions-policy",
        HeaderValue::from_static("camera=(), microphone=(), geolocation=()"),
    );
    response
}
