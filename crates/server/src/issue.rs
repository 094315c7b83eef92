//! Minting access tokens for a session: the RFC 9068 claims in one place, for the token
//! endpoint and `POST /v1/session/token`.
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::Session;
use latchkey_tokens::{AccessTokenClaims, new_jti};
use serde::Serialize;

/// A signed access token and the claims it carries.
pub struct AccessToken {
    pub token: String,
    pub claims: AccessTokenClaims,
}

/// Signs an access token of `session` for `client_id` and `audience`; it expires after the
/// configured lifetime, or with the session if that comes first.
pub fn access_token(
    state: &AppState,
    session: &Session,
    client_id: &str,
    audience: &str,
    scope: &str,
) -> Result<AccessToken, ApiError> {
    let now = state.clock.now();
    let exp = state.policy.access_expiry(session, now);
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        sub: session.user_id.to_string(),
        aud: audience.to_string(),
        exp: exp.unix_timestamp(),
        iat: now.unix_timestamp(),
        nbf: now.unix_timestamp(),
        jti: new_jti(),
        client_id: client_id.to_string(),
        scope: scope.to_string(),
        sid: session.id.to_string(),
    };
    let token = state
        .keyring()
        .sign(&claims)
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
    Ok(AccessToken { token, claims })
}

/// Signs a `client_credentials` access token: `sub` and `client_id` are the client id, and
/// `sid` is a fresh random id that names no session (the claim is required, and no session
/// exists to name; see [`crate::auth::is_client_token`]). It lives `access_token.ttl`.
pub fn client_access_token(
    state: &AppState,
    client_id: &str,
    audience: &str,
    scope: &str,
) -> Result<AccessToken, ApiError> {
    let now = state.clock.now();
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        sub: client_id.to_string(),
        aud: audience.to_string(),
        exp: (now + state.policy.access_ttl).unix_timestamp(),
        iat: now.unix_timestamp(),
        nbf: now.unix_timestamp(),
        jti: new_jti(),
        client_id: client_id.to_string(),
        scope: scope.to_string(),
        sid: latchkey_core::SessionId::new().to_string(),
    };
    let token = state
        .keyring()
        .sign(&claims)
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
    Ok(AccessToken { token, claims })
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    scope: String,
}

impl AccessToken {
    /// The RFC 6749 §5.1 token response, never cached.
    pub fn into_response(self, scope: String, refresh_token: Option<String>) -> Response {
        let mut response = Json(TokenResponse {
            expires_in: self.claims.exp - self.claims.iat,
            access_token: self.token,
            token_type: "Bearer",
            refresh_token,
            scope,
        })
        .into_response();
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        response
    }
}
