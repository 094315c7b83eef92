//! The axum extractor (feature `axum`).
//!
//! [`AccessToken`] works with any router state. It takes the [`Claims`] that
//! [`crate::RequireAccessTokenLayer`] put in the request extensions; without that layer, it
//! verifies the request's Bearer token itself with a [`Verifier`] found in the extensions
//! (add one with `axum::Extension(verifier)` as a layer). `Option<AccessToken>` makes the
//! token optional: no `Authorization` header gives `None`, a bad token is still refused.
//!
//! ```no_run
//! # async fn run(verifier: latchkey_verify::Verifier) {
//! use axum::{Extension, Router, routing::get};
//! use latchkey_verify::AccessToken;
//!
//! async fn hello(AccessToken(claims): AccessToken) -> String {
//!     format!("hello {}", claims.sub)
//! }
//! // With the layer (every route protected) ...
//! let app: Router = Router::new().route("/hello", get(hello)).layer(verifier.layer());
//! // ... or per handler, the extractor verifying by itself.
//! let app: Router = Router::new().route("/hello", get(hello)).layer(Extension(verifier));
//! # }
//! ```

use axum_core::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    response::{IntoResponse, Response},
};
use http::request::Parts;

use crate::{Claims, Verifier, error::VerifyError, layer};

/// The verified claims of the request's access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessToken(pub Claims);

impl<S: Send + Sync> FromRequestParts<S> for AccessToken {
    type Rejection = VerifyError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        if let Some(claims) = parts.extensions.get::<Claims>() {
            return Ok(AccessToken(claims.clone()));
        }
        let Some(verifier) = parts.extensions.get::<Verifier>().cloned() else {
            tracing::error!(
                "AccessToken extractor used without RequireAccessTokenLayer or an \
                 Extension(Verifier); refusing the request"
            );
            return Err(VerifyError::MissingToken);
        };
        let claims = verifier
            .verify(layer::bearer_token(&parts.headers)?)
            .await?;
        parts.extensions.insert(claims.clone());
        Ok(AccessToken(claims))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for AccessToken {
    type Rejection = VerifyError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        if parts.extensions.get::<Claims>().is_none()
            && !parts.headers.contains_key(http::header::AUTHORIZATION)
        {
            return Ok(None);
        }
        <AccessToken as FromRequestParts<S>>::from_request_parts(parts, state)
            .await
            .map(Some)
    }
}

/// Latchkey's error body with 401 (or 503 for [`VerifyError::FeedStale`]).
impl IntoResponse for VerifyError {
    fn into_response(self) -> Response {
        layer::error_response(&self)
    }
}
