//! Extractors that turn every malformed input into the standard 4xx body (axum's own
//! rejections would answer 422 or plain text): request bodies, and [`Path`] and [`Query`],
//! which handlers use instead of axum's.
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

/// Request bodies above this size get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// `axum::extract::Path` with the standard error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// `axum::extract::Query` with the standard error body.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

async fn body_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state)
        .await
        .map_err(|e: BytesRejection| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else if crate::serve::is_body_timeout(&e) {
                ApiError::RequestTimeout("the request body did not arrive in time")
            } else {
                ApiError::InvalidRequest("could not read the request body".into())
            }
        })
}

fn media_type(req: &Request) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(
        value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

fn json_error(e: serde_json::Error) -> ApiError {
    // serde's message names the field and expected type, never the value of a secret.
    let what = match e.classify() {
        serde_json::error::Category::Data => format!("request body has the wrong shape: {e}"),
        _ => "request body is not valid JSON".to_string(),
    };
    ApiError::InvalidRequest(what)
}

/// A JSON body: `application/json` (or `+json`) only, so browsers cannot forge it with a
/// simple (CORS-preflight-free) form post.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match media_type(&req).as_deref() {
            Some(m) if m == "application/json" || m.ends_with("+json") => {}
            _ => {
                return Err(ApiError::UnsupportedMediaType(
                    "Content-Type must be application/json",
                ));
            }
        }
        let bytes = body_bytes(req, state).await?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(json_error)
    }
}

/// An OAuth request body: `application/x-www-form-urlencoded` as RFC 6749 requires, or JSON.
/// A repeated parameter is refused (RFC 6749 §3.1).
pub struct OAuthBody<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OAuthBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let media = media_type(&req);
        let is_json = match media.as_deref() {
            Some("application/x-www-form-urlencoded") | None => false,
            Some(m) if m == "application/json" || m.ends_with("+json") => true,
            Some(_) => {
                return Err(ApiError::UnsupportedMediaType(
                    "Content-Type must be application/x-www-form-urlencoded or application/json",
                ));
            }
        };
        let bytes = body_bytes(req, state).await?;
        if is_json {
            return serde_json::from_slice(&bytes)
                .map(OAuthBody)
                .map_err(json_error);
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| ApiError::InvalidRequest("request body is not a valid form".into()))?;
        let mut seen = std::collections::HashSet::new();
        for (name, _) in &pairs {
            if !seen.insert(name.as_str()) {
                return Err(ApiError::InvalidRequest(format!(
                    "parameter {name:?} is repeated"
                )));
            }
        }
        // Forms carry only strings; going through a JSON object gives the same typed errors.
        let object: serde_json::Map<String, serde_json::Value> = pairs
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        serde_json::from_value(serde_json::Value::Object(object))
            .map(OAuthBody)
            .map_err(|e| ApiError::InvalidRequest(format!("request has the wrong shape: {e}")))
    }
}
