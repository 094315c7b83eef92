//! The demo single-page app of examples/bff-demo, at `/demo/` when `bff.demo = true`.
//!
//! One static page and one script under the same strict CSP as the account pages; the script
//! calls `/api/hello` and `/api/echo` through the proxy and never holds a token.
use crate::error::ApiError;
use crate::routes::pages::CONTENT_SECURITY_POLICY;
use axum::http::{HeaderValue, Method, header};
use axum::response::{IntoResponse, Redirect, Response};

const HTML: &str = include_str!("demo/index.html");
const SCRIPT: &str = include_str!("demo/demo.js");

/// The demo's answer for `path`, or `None` when the path is not the demo's.
pub fn serve(method: &Method, path: &str) -> Option<Response> {
    let (body, content_type) = match path {
        "/demo" => return Some(Redirect::to("/demo/").into_response()),
        "/demo/" | "/demo/index.html" => (HTML, "text/html; charset=utf-8"),
        "/demo/demo.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    if *method != Method::GET && *method != Method::HEAD {
        return Some(ApiError::MethodNotAllowed.into_response());
    }
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Some(response)
}
