//! The tower layer: every request must carry `Authorization: Bearer <access token>`.
//!
//! A request with a good token goes on with its [`Claims`] in the request extensions. Any
//! other gets Latchkey's error body, `{"error":"unauthorized","error_description":...}`, with
//! status 401 and `WWW-Authenticate: Bearer error="invalid_token"` (just `Bearer` when no
//! token was sent, per RFC 6750 §3.1), or 503 `unavailable` with `Retry-After` while the
//! verifier fails closed on a stale revocation feed. The handler never runs for those.
//!
//! ```no_run
//! # async fn run(verifier: latchkey_verify::Verifier) {
//! use axum::{Extension, Router, routing::get};
//! use latchkey_verify::Claims;
//!
//! let app: Router = Router::new()
//!     .route("/hello", get(|Extension(claims): Extension<Claims>| async move { claims.sub }))
//!     .layer(verifier.layer());
//! # }
//! ```

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, header};
use tower_layer::Layer;
use tower_service::Service;

use crate::{Claims, MAX_TOKEN_LEN, TokenRejection, Verifier, error::VerifyError};

/// Longest `Authorization` header looked at; longer ones are refused unread.
pub const MAX_AUTHORIZATION_LEN: usize = MAX_TOKEN_LEN + 64;

/// Applies [`RequireAccessToken`] to a service. Build it with [`Verifier::layer`] or
/// [`RequireAccessTokenLayer::new`].
#[derive(Clone, Debug)]
pub struct RequireAccessTokenLayer {
    verifier: Verifier,
}

impl RequireAccessTokenLayer {
    /// A layer that verifies with `verifier`.
    pub fn new(verifier: Verifier) -> Self {
        RequireAccessTokenLayer { verifier }
    }
}

impl<S> Layer<S> for RequireAccessTokenLayer {
    type Service = RequireAccessToken<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAccessToken {
            inner,
            verifier: self.verifier.clone(),
        }
    }
}

/// A service that lets only requests with a valid, unrevoked access token through to `S`,
/// with their [`Claims`] inserted into the request extensions.
#[derive(Clone, Debug)]
pub struct RequireAccessToken<S> {
    inner: S,
    verifier: Verifier,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RequireAccessToken<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: From<Bytes> + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        // The clone that was polled ready is the one that gets the call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let verified = match bearer_token(request.headers()) {
                Ok(token) => verifier.verify(token).await,
                Err(error) => Err(error),
            };
            match verified {
                Ok(claims) => {
                    request.extensions_mut().insert(claims);
                    inner.call(request).await
                }
                Err(error) => {
                    tracing::debug!(%error, "request refused");
                    Ok(error_response(&error))
                }
            }
        })
    }
}

/// The token of the request's single `Authorization: Bearer <token>` header.
///
/// The scheme is case-insensitive; the token must be visible ASCII. No header, or another
/// scheme, is [`VerifyError::MissingToken`]; a header over [`MAX_AUTHORIZATION_LEN`] is refused
/// before it is read at all.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, VerifyError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next().ok_or(VerifyError::MissingToken)?;
    if values.next().is_some() {
        return Err(VerifyError::MalformedHeader);
    }
    let bytes = value.as_bytes();
    if bytes.len() > MAX_AUTHORIZATION_LEN {
        return Err(VerifyError::InvalidToken(TokenRejection::TooLong));
    }
    let (scheme, rest) = match bytes.iter().position(|&b| b == b' ') {
        Some(space) => (&bytes[..space], &bytes[space..]),
        None => (bytes, &[][..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(VerifyError::MissingToken);
    }
    let token = rest.trim_ascii();
    if token.is_empty() || !token.iter().all(u8::is_ascii_graphic) {
        return Err(VerifyError::MalformedHeader);
    }
    std::str::from_utf8(token).map_err(|_| VerifyError::MalformedHeader)
}

/// The response for a refusal: Latchkey's JSON error body, the status of
/// [`VerifyError::status`], and `WWW-Authenticate` (401) or `Retry-After` (503).
pub fn error_response<B: From<Bytes>>(error: &VerifyError) -> Response<B> {
    let description = error.to_string();
    let body = serde_json::json!({
        "error": error.code(),
        "error_description": description,
    });
    let mut response = Response::new(B::from(Bytes::from(body.to_string())));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match error {
        VerifyError::FeedStale => {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        VerifyError::MissingToken => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {
            // RFC 6750 §3: error_description is limited to printable ASCII without `"` and `\`.
            let description: String = description
                .chars()
                .map(|c| match c {
                    '"' | '\\' => '\'',
                    c if c.is_ascii() && !c.is_ascii_control() => c,
                    _ => '?',
                })
                .collect();
            let challenge =
                format!("Bearer error=\"invalid_token\", error_description=\"{description}\"");
            let value = HeaderValue::from_str(&challenge)
                .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""));
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

/// The claims the layer inserted, if any (for handlers outside axum).
pub fn claims<B>(request: &Request<B>) -> Option<&Claims> {
    request.extensions().get::<Claims>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(value).expect("header value"),
            );
        }
        map
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(
            bearer_token(&headers(&[b"Bearer abc.def.ghi"])),
            Ok("abc.def.ghi")
        );
        assert_eq!(bearer_token(&headers(&[b"bearer   a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[b"BEARER a.b.c"])), Ok("a.b.c"));
        assert_eq!(bearer_token(&headers(&[])), Err(VerifyError::MissingToken));
        for other in [
            &b"Basic dXNlcjpwYXNz"[..],
            b"Bearerx a.b.c",
            b"a.b.c",
            b"Token a",
        ] {
            assert_eq!(
                bearer_token(&headers(&[other])),
                Err(VerifyError::MissingToken)
            );
        }
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer a b",
            b"Bearer a\tb",
            b"Bearer \xc3\xa9",
        ] {
            assert_eq!(
                bearer_token(&headers(&[bad])),
                Err(VerifyError::MalformedHeader),
                "{bad:?}"
            );
        }
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a.b.c", b"Bearer a.b.c"])),
            Err(VerifyError::MalformedHeader)
        );
        let long = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_LEN));
        assert_eq!(
            bearer_token(&headers(&[long.as_bytes()])),
            Err(VerifyError::InvalidToken(TokenRejection::TooLong))
        );
    }

    #[test]
    fn error_responses() {
        let r: Response<Vec<u8>> = error_response(&VerifyError::MissingToken);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(body["error"], "unauthorized");
        assert_eq!(body["error_description"], "no access token");

        let r: Response<Vec<u8>> = error_response(&VerifyError::InvalidToken(
            TokenRejection::UnsupportedHeader("jku"),
        ));
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.headers()[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\", error_description=\"invalid access token: unsupported header parameter 'jku'\""
        );

        let r: Response<Vec<u8>> = error_response(&VerifyError::FeedStale);
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert!(r.headers().get(header::WWW_AUTHENTICATE).is_none());
        let body: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(body["error"], "unavailable");
    }
}
