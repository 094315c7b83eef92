//! Who is calling: a Bearer access token issued by this server whose session is still live.
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use latchkey_core::{Session, SessionId, SessionKind};
use latchkey_tokens::{AccessTokenClaims, Validation, VerifyError};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Latchkey's own endpoints allow at most this much clock skew (API.md).
pub const OWN_LEEWAY_SECS: u64 = 1;

/// An authenticated caller: verified claims plus the live session they name.
pub struct BearerSession {
    pub claims: AccessTokenClaims,
    pub session: Session,
}

/// The token of an `Authorization: Bearer` header, if that is the scheme used.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares a presented secret with the configured one in constant time; hashing first makes
/// the comparison independent of both lengths.
pub fn secrets_equal(expected: &str, given: &str) -> bool {
    Sha256::digest(expected.as_bytes())
        .ct_eq(&Sha256::digest(given.as_bytes()))
        .into()
}

/// Checks an access token's signature and claims as Latchkey's own endpoints do: this issuer,
/// any audience, at most [`OWN_LEEWAY_SECS`] of clock skew. Says nothing about its session.
pub fn verify_own_token(state: &AppState, token: &str) -> Result<AccessTokenClaims, VerifyError> {
    verify_own_token_for(state, token, None)
}

/// [`verify_own_token`], with an audience the token must have (or contain) when given.
pub fn verify_own_token_for(
    state: &AppState,
    token: &str,
    audience: Option<&str>,
) -> Result<AccessTokenClaims, VerifyError> {
    let validation = Validation {
        issuer: state.issuer.clone(),
        audience: audience.map(str::to_string),
        leeway_secs: OWN_LEEWAY_SECS,
        now: state.clock.now().unix_timestamp(),
    };
    state.keyring().verify(token, &validation)
}

/// Whether a token of `client_id` may manage the user's account: only a configured client
/// with `account_api` (default true). Tokens the BFF mints (`client_id` = the reserved
/// [`BFF_CLIENT_ID`](crate::bff::BFF_CLIENT_ID), never a configured client) are for upstream
/// APIs and never may.
pub fn may_manage_account(state: &AppState, client_id: &str) -> bool {
    client_id != crate::bff::BFF_CLIENT_ID
        && state
            .clients
            .get(client_id)
            .is_some_and(|client| client.account_api)
}

/// Whether verified `claims` are those of a `client_credentials` token: `sub` is the client id
/// itself (a user's `sub` is a user id), and that client is configured, confidential and still
/// lists the grant. Such a token's `sid` is a fresh random id that names no session, so it is
/// never a user's credential; introspection and forward auth accept it without a session.
pub fn is_client_token(state: &AppState, claims: &AccessTokenClaims) -> bool {
    claims.sub == claims.client_id
        && state.clients.get(&claims.client_id).is_some_and(|client| {
            client.kind == crate::config::ClientKind::Confidential
                && client.allows_grant("client_credentials")
        })
}

/// Verifies an access token strictly (any audience) and checks that its session is live and
/// that its client may manage the account (the account endpoints' rule, API.md).
pub async fn verify_access_token(state: &AppState, token: &str) -> Result<BearerSession, ApiError> {
    let claims = verify_own_token(state, token)
        .map_err(|_| ApiError::Unauthorized("the access token is invalid or expired"))?;
    if !may_manage_account(state, &claims.client_id) || is_client_token(state, &claims) {
        return Err(ApiError::Unauthorized(
            "this access token may not manage the account",
        ));
    }
    user_token_session(state, claims).await
}

/// The live token session a verified user access token belongs to: the session exists, is a
/// token session (never a cookie session: its tokens were minted for a resource audience by the
/// BFF or `POST /v1/session/token`), is live, is the `sub`'s, and the user still admits it.
/// Errors are 401 `unauthorized`; callers with RFC 6750 answers map them.
pub async fn user_token_session(
    state: &AppState,
    claims: AccessTokenClaims,
) -> Result<BearerSession, ApiError> {
    let now = state.clock.now();
    let sid = SessionId::parse(&claims.sid)
        .ok_or(ApiError::Unauthorized("the access token is invalid"))?;
    let session = state.store.session(sid).await?;
    match session {
        // The user must still admit the session too: not banned, same epoch (invariant 7).
        // A token of a cookie session was minted for a resource audience (BFF or
        // `POST /v1/session/token`): never an account credential, whatever its client says.
        Some(session) if session.kind == SessionKind::Cookie => Err(ApiError::Unauthorized(
            "this access token was minted for a resource API and is not accepted here",
        )),
        Some(session)
            if session.is_live(now)
                && session.user_id.to_string() == claims.sub
                && state.admitted(&session).await? =>
        {
            Ok(BearerSession { claims, session })
        }
        _ => Err(ApiError::Unauthorized(
            "the session of this access token has ended",
        )),
    }
}

impl FromRequestParts<AppState> for BearerSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(&parts.headers)
            .ok_or(ApiError::Unauthorized("authentication is required"))?;
        verify_access_token(state, token).await
    }
}
