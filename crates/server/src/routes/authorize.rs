//! `GET /v1/authorize`: forward authentication for nginx `auth_request`, Traefik
//! `forwardAuth` and Envoy. Bearer tokens are checked locally (signature + this instance's
//! copy of the revocation feed, no store lookup); cookies are checked against the store.
use crate::auth::{bearer_token, verify_own_token_for};
use crate::caller::authenticate_cookie;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use latchkey_core::{SessionId, UserId};
use std::collections::HashMap;
use std::sync::RwLock;

/// Usernames never change, so forward auth can remember them instead of asking the store.
#[derive(Default)]
pub struct UsernameCache(RwLock<HashMap<UserId, String>>);

const USERNAME_CACHE_MAX: usize = 100_000;

impl UsernameCache {
    pub async fn get(&self, state: &AppState, id: UserId) -> ApiResult<String> {
        if let Some(name) = self.0.read().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(name.clone());
        }
        let user = state
            .store
            .user_by_id(id)
            .await?
            .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        if map.len() >= USERNAME_CACHE_MAX {
            map.clear();
        }
        map.insert(id, user.username.clone());
        Ok(user.username)
    }
}

/// Whom a forward-auth request is for.
pub struct Authorized {
    pub subject: Subject,
    pub sid: SessionId,
    /// A Bearer token's roles; `None` for a cookie caller (the user's current roles apply).
    pub roles: Option<Vec<String>>,
}

/// Who a valid credential speaks for.
pub enum Subject {
    /// A user (cookie session or a user's access token).
    User(UserId),
    /// A `client_credentials` token: the client acting for itself (its `sub` is the client id,
    /// and its `sid` names no session).
    Client(String),
}

/// Verifies a Bearer access token without touching the store; with `audience`, the token
/// must be for it.
fn check_bearer(state: &AppState, token: &str, audience: Option<&str>) -> ApiResult<Authorized> {
    let claims = verify_own_token_for(state, token, audience).map_err(|_| {
        ApiError::Unauthorized("the access token is invalid, expired or not for this audience")
    })?;
    let subject = if crate::auth::is_client_token(state, &claims) {
        Some(Subject::Client(claims.client_id))
    } else {
        UserId::parse(&claims.sub).map(Subject::User)
    };
    let (Some(sid), Some(subject)) = (SessionId::parse(&claims.sid), subject) else {
        return Err(ApiError::Unauthorized("the access token is invalid"));
    };
    // Fail closed when this instance has lost track of revocations.
    if !state.follower.is_fresh() {
        return Err(ApiError::Unavailable(
            "the revocation log has not been read recently".into(),
        ));
    }
    if state.follower.is_revoked(&sid) {
        return Err(ApiError::Unauthorized(
            "the session of this access token has ended",
        ));
    }
    // A role was removed after this token was minted (docs/decisions/0011): the client
    // refreshes and gets a token with the current roles.
    if state.follower.is_token_revoked(&sid, claims.iat) {
        return Err(ApiError::Unauthorized(
            "the roles of this access token are out of date",
        ));
    }
    Ok(Authorized {
        subject,
        sid,
        roles: Some(claims.roles),
    })
}

/// `GET /v1/authorize?aud=A`: a Bearer token must be for audience `A` (the app behind the
/// proxy), so a token minted for one API does not open every app. Cookie sessions are not
/// bound to an audience.
#[derive(Default, serde::Deserialize)]
struct AuthorizeQuery {
    aud: Option<String>,
    /// `?role=R`: the caller must hold role R, else 403.
    role: Option<String>,
}

impl AuthorizeQuery {
    fn parse(query: Option<&str>) -> ApiResult<Self> {
        let Some(query) = query else {
            return Ok(Self::default());
        };
        let parsed: Self = serde_urlencoded::from_str(query)
            .map_err(|_| ApiError::InvalidRequest("malformed query string".into()))?;
        if parsed
            .aud
            .as_deref()
            .is_some_and(|a| a.is_empty() || a.len() > 256)
        {
            return Err(ApiError::InvalidRequest(
                "aud must be 1-256 characters".into(),
            ));
        }
        if parsed
            .role
            .as_deref()
            .is_some_and(|r| !latchkey_core::is_valid_role(r))
        {
            return Err(ApiError::InvalidRequest(
                "role must be 1-64 characters of A-Z a-z 0-9 _ . : -".into(),
            ));
        }
        Ok(parsed)
    }
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Parsed first, so a malformed or repeated parameter is a 400 for every caller.
        let query = AuthorizeQuery::parse(parts.uri.query())?;
        if let Some(token) = bearer_token(&parts.headers) {
            return check_bearer(state, token, query.aud.as_deref());
        }
        let secret = state
            .cookie
            .read(&parts.headers)
            .map_err(|_| ApiError::Unauthorized("the session cookie is invalid"))?
            .ok_or(ApiError::Unauthorized("authentication is required"))?;
        let session = authenticate_cookie(state, &secret).await?;
        Ok(Authorized {
            subject: Subject::User(session.user_id),
            sid: session.id,
            roles: None,
        })
    }
}

pub async fn authorize(
    State(state): State<AppState>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    who: Authorized,
) -> ApiResult<Response> {
    let required = AuthorizeQuery::parse(query.as_deref())?.role;
    let roles = match (who.roles, &who.subject) {
        // Signed by this server, so valid names; checked anyway since they become a header.
        (Some(mut roles), _) => {
            roles.retain(|r| latchkey_core::is_valid_role(r));
            roles
        }
        // A cookie caller: the user's roles as they are now.
        (None, Subject::User(user)) => state
            .store
            .user_roles(*user)
            .await?
            .map(|r| r.roles)
            .unwrap_or_default(),
        (None, Subject::Client(_)) => Vec::new(),
    };
    if let Some(required) = required
        && !roles.contains(&required)
    {
        return Err(ApiError::Forbidden(
            "the caller does not have the required role".into(),
        ));
    }
    let mut response = StatusCode::OK.into_response();
    let headers = response.headers_mut();
    let value = |s: String| {
        HeaderValue::from_str(&s).map_err(|_| ApiError::Internal("header value".into()))
    };
    match who.subject {
        Subject::User(user) => {
            let username = state.usernames.get(&state, user).await?;
            headers.insert("x-latchkey-user", value(user.to_string())?);
            headers.insert("x-latchkey-username", value(username)?);
        }
        // A client acting for itself: `X-Latchkey-User` is its `sub` (the client id), marked
        // by `X-Latchkey-Client`; there is no username.
        Subject::Client(client) => {
            headers.insert("x-latchkey-user", value(client.clone())?);
            headers.insert("x-latchkey-client", value(client)?);
        }
    }
    headers.insert("x-latchkey-session", value(who.sid.to_string())?);
    headers.insert("x-latchkey-roles", value(roles.join(","))?);
    headers.insert(
        axum::http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(response)
}
