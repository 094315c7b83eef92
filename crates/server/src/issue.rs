//! Minting access tokens for a session: the RFC 9068 claims in one place, for the token
//! endpoint, `POST /v1/session/token` and the BFF (through [`roles_at_mint`]).
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::{Session, UserId};
use latchkey_tokens::{AccessTokenClaims, new_jti};
use serde::Serialize;
use time::OffsetDateTime;

/// A signed access token and the claims it carries.
pub struct AccessToken {
    pub token: String,
    pub claims: AccessTokenClaims,
}

/// What differs between Latchkey's access tokens: whom they speak for and to whom.
pub struct TokenFor<'a> {
    /// The user id, or the client id of a `client_credentials` token.
    pub sub: String,
    pub sid: String,
    pub client_id: &'a str,
    pub audience: &'a str,
    pub scope: &'a str,
    pub roles: Vec<String>,
}

/// Signs the RFC 9068 claims, issued at `now` and expiring at `exp`: the one place the claims
/// of every access token (token endpoint, session tokens, client credentials, BFF) are built.
pub fn sign(
    state: &AppState,
    who: TokenFor<'_>,
    now: OffsetDateTime,
    exp: OffsetDateTime,
) -> Result<AccessToken, ApiError> {
    let claims = AccessTokenClaims {
        iss: state.issuer.clone(),
        sub: who.sub,
        aud: who.audience.to_string(),
        exp: exp.unix_timestamp(),
        iat: now.unix_timestamp(),
        nbf: now.unix_timestamp(),
        jti: new_jti(),
        client_id: who.client_id.to_string(),
        scope: who.scope.to_string(),
        sid: who.sid,
        roles: who.roles,
    };
    let token = state
        .keyring()
        .sign(&claims)
        .map_err(|e| ApiError::Internal(format!("signing an access token: {e}")))?;
    Ok(AccessToken { token, claims })
}

/// Signs an access token of `session` for `client_id` and `audience`; it expires after the
/// configured lifetime, or with the session if that comes first. It carries the user's roles
/// as they are now ([`roles_at_mint`]).
pub async fn access_token(
    state: &AppState,
    session: &Session,
    client_id: &str,
    audience: &str,
    scope: &str,
) -> Result<AccessToken, ApiError> {
    let (roles, now) = roles_at_mint(state, session.user_id).await?;
    let who = TokenFor {
        sub: session.user_id.to_string(),
        sid: session.id.to_string(),
        client_id,
        audience,
        scope,
        roles,
    };
    sign(state, who, now, state.policy.access_expiry(session, now))
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
    let who = TokenFor {
        sub: client_id.to_string(),
        sid: latchkey_core::SessionId::new().to_string(),
        client_id,
        audience,
        scope,
        roles: Vec::new(),
    };
    sign(state, who, now, now + state.policy.access_ttl)
}

/// Longest wait before minting after a role removal (the rest of its second, plus clock skew
/// between instances).
const MAX_MINT_WAIT: time::Duration = time::Duration::seconds(2);

/// The user's current roles for a token minted now, and the instant to mint it at (its `iat`).
///
/// A role removal at instant `r` puts "tokens of these sessions with `iat` before
/// `stale_before(r)` (the next whole second) are stale" on the feed (docs/decisions/0011). A
/// token minted with the new roles in the rest of that second would be refused with them, so
/// minting waits out that fraction of a second: tokens minted after a removal always pass.
/// (With a clock that does not move, as in tests, `iat` is that second instead.) A user that
/// no longer exists has no roles.
pub async fn roles_at_mint(
    state: &AppState,
    user: UserId,
) -> Result<(Vec<String>, OffsetDateTime), ApiError> {
    let stored = state.store.user_roles(user).await?.unwrap_or_default();
    let mut now = state.clock.now();
    if let Some(removed_at) = stored.removed_at {
        let valid_from = latchkey_core::stale_before(removed_at);
        let wait = valid_from - now;
        if wait > time::Duration::ZERO && wait <= MAX_MINT_WAIT {
            tokio::time::sleep(wait.unsigned_abs()).await;
            now = state.clock.now().max(valid_from);
        } else if wait > MAX_MINT_WAIT {
            // The removal was stamped by a clock well ahead of this one: never mint into the
            // future for that; verifiers refuse these tokens until the clocks agree.
            tracing::warn!(
                user_id = %user,
                ahead_ms = wait.whole_milliseconds(),
                "a role removal is stamped in the future; check the clocks of Latchkey's hosts"
            );
        }
    }
    Ok((stored.roles, now))
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
