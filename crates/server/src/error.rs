//! One error type for every endpoint, mapped to the standard body
//! `{"error": "<code>", "error_description": "<text>"}` in one place.
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidClient(String),
    #[error("{0}")]
    InvalidGrant(String),
    #[error("this grant_type is not supported (see grant_types_supported in the server metadata)")]
    UnsupportedGrantType,
    #[error("{0}")]
    InvalidScope(String),
    /// The client is known but may not use this grant or endpoint (RFC 6749 §5.2).
    #[error("{0}")]
    UnauthorizedClient(String),
    #[error("{0}")]
    Unauthorized(&'static str),
    /// RFC 6750 §3.1: a Bearer token that is invalid, expired, revoked or not accepted by this
    /// endpoint (401 with `WWW-Authenticate: Bearer error="invalid_token"`).
    #[error("{0}")]
    InvalidToken(&'static str),
    /// RFC 6750 §3.1: the token lacks the scope the endpoint needs (403, with the scope named in
    /// `WWW-Authenticate`).
    #[error("{description}")]
    InsufficientScope {
        scope: &'static str,
        description: &'static str,
    },
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    CsrfFailed(&'static str),
    #[error("no such resource")]
    NotFound,
    #[error("method not allowed on this resource")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(&'static str),
    #[error("request body is larger than 65536 bytes")]
    PayloadTooLarge,
    /// The request body did not arrive in time: `server.body_read_timeout`, or for the BFF
    /// proxy `bff.request_idle_timeout` (408; the connection is closed).
    #[error("{0}")]
    RequestTimeout(&'static str),
    /// BFF proxy: the body is over `bff.max_body` (413).
    #[error("request body is larger than {0} bytes")]
    ProxyBodyTooLarge(u64),
    #[error("{0}")]
    UnsupportedMediaType(&'static str),
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    /// The store could not answer: fail closed. The cause is logged, not shown.
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable(String),
    /// BFF proxy: the upstream could not be reached or answered badly (502).
    #[error("{0}")]
    BadGateway(&'static str),
    /// BFF proxy: the upstream did not answer in time (504).
    #[error("{0}")]
    GatewayTimeout(&'static str),
    /// A bug. The cause is logged, not shown.
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: String,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidGrant(_)
            | ApiError::UnsupportedGrantType
            | ApiError::InvalidScope(_)
            | ApiError::UnauthorizedClient(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidClient(_) | ApiError::Unauthorized(_) | ApiError::InvalidToken(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::Forbidden(_)
            | ApiError::CsrfFailed(_)
            | ApiError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge | ApiError::ProxyBodyTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::InvalidClient(_) => "invalid_client",
            ApiError::InvalidGrant(_) => "invalid_grant",
            ApiError::UnsupportedGrantType => "unsupported_grant_type",
            ApiError::InvalidScope(_) => "invalid_scope",
            ApiError::UnauthorizedClient(_) => "unauthorized_client",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::InvalidToken(_) => "invalid_token",
            ApiError::InsufficientScope { .. } => "insufficient_scope",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::CsrfFailed(_) => "csrf_failed",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge | ApiError::ProxyBodyTooLarge(_) => "payload_too_large",
            ApiError::RequestTimeout(_) => "request_timeout",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::BadGateway(_) => "bad_gateway",
            ApiError::GatewayTimeout(_) => "gateway_timeout",
            ApiError::Internal(_) => "server_error",
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::Conflict(what),
            StoreError::Unavailable(cause) => ApiError::Unavailable(cause),
            StoreError::Corrupt(cause) => ApiError::Internal(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(cause) => tracing::warn!(error = %cause, "store unavailable"),
            ApiError::Internal(cause) => tracing::error!(error = %cause, "internal error"),
            _ => {}
        }
        let status = self.status();
        let body = ErrorBody {
            error: self.code(),
            error_description: self.to_string(),
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match &self {
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::RequestTimeout(_) => {
                // The rest of the body may still be on its way: never read it as a request.
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::InvalidToken(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            ApiError::InsufficientScope { scope, .. } => {
                let challenge = format!("Bearer error=\"insufficient_scope\", scope=\"{scope}\"");
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            ApiError::InvalidClient(_) => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"latchkey\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// A path parameter that does not decode (e.g. `%FF` where text is expected).
impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        match e {
            PathRejection::FailedToDeserializePathParams(_) => {
                ApiError::InvalidRequest("a path parameter is not valid".into())
            }
            // Only when a route was built wrongly: a bug, not bad input.
            other => ApiError::Internal(format!("path parameters: {other}")),
        }
    }
}

/// A query string that does not deserialize (wrong type, bad percent-encoding).
impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        // The message names the field and the problem; the body_text never holds a secret
        // that the query string did not already show in the URL.
        ApiError::InvalidRequest(format!("the query string is not valid: {}", e.body_text()))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
