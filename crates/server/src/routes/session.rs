//! Cookie mode: log in, read and end the current server-side session.
use crate::caller::{CookieCaller, check_origin};
use crate::cookie::csrf_token_for;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::login::{LoginRefused, check_credentials};
use crate::net::ClientInfo;
use crate::rfc3339;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::{RevokeReason, Secret, Session, SessionId, SessionKind, User};
use latchkey_store::CreateOutcome;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    username: String,
    password: String,
}

fn session_body(session: &Session, user: &User, roles: &[String], cookie_secret: &Secret) -> Value {
    json!({
        "session": {
            "id": session.id.to_string(),
            "user": {"id": user.id.to_string(), "username": user.username, "roles": roles},
            "created_at": rfc3339(session.created_at),
            "expires_at": rfc3339(session.expires_at),
        },
        "csrf_token": csrf_token_for(cookie_secret).to_text(),
    })
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// POST /v1/session: a fresh session and cookie on every login; a cookie sent with the login
/// is never adopted (session fixation), and its session is ended.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    peer: ClientInfo,
    JsonBody(body): JsonBody<Login>,
) -> ApiResult<Response> {
    check_origin(&state, &headers)?; // login CSRF
    let user =
        match check_credentials(&state, "cookie", &peer, &body.username, &body.password).await? {
            Ok(user) => user,
            Err(LoginRefused::BadCredentials) => {
                return Err(ApiError::Unauthorized(
                    "the username or password is incorrect",
                ));
            }
            Err(LoginRefused::Banned) => {
                return Err(ApiError::Forbidden("this account is banned".into()));
            }
        };
    let now = state.clock.now();
    if let Ok(Some(old)) = state.cookie.read(&headers)
        && let Some(old) = state.store.session_by_secret(&old.hash()).await?
        && old.kind == SessionKind::Cookie
    {
        state.revoke_session(old.id, RevokeReason::Logout).await?;
    }
    let secret = Secret::generate();
    let session = Session {
        id: SessionId::new(),
        user_id: user.id,
        kind: SessionKind::Cookie,
        client_id: None,
        scope: None,
        secret_hash: Some(secret.hash()),
        csrf_hash: Some(csrf_token_for(&secret).hash()),
        created_at: now,
        last_seen_at: now,
        expires_at: now + state.config.session.absolute_timeout.as_time(),
        revoked_at: None,
        revoke_reason: None,
        user_agent: peer.user_agent.clone(),
        ip: Some(peer.ip.clone()),
        // Read with the user before the password was verified (invariant 7).
        epoch: user.session_epoch,
        parent_id: None,
    };
    if state.store.create_session(&session, None).await? == CreateOutcome::UserChanged {
        // A ban, password change or "revoke all" landed during this login. Answer as a
        // login made a moment later would: banned 403, otherwise 401 (log in again).
        tracing::info!(
            target: "latchkey::security",
            user_id = %user.id,
            "cookie login refused: the account was banned, its password changed or its sessions revoked during the login"
        );
        let banned = state
            .store
            .user_by_id(user.id)
            .await?
            .is_none_or(|u| u.is_banned());
        return Err(if banned {
            ApiError::Forbidden("this account is banned".into())
        } else {
            ApiError::Unauthorized(
                "the account changed during the login (password changed or sessions revoked); log in again",
            )
        });
    }
    tracing::info!(user_id = %user.id, sid = %session.id, "cookie login");
    let roles = state
        .store
        .user_roles(user.id)
        .await?
        .map(|r| r.roles)
        .unwrap_or_default();
    let mut response = Json(session_body(&session, &user, &roles, &secret)).into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.cookie.set(&secret));
    Ok(no_store(response))
}

/// GET /v1/session
pub async fn current(
    State(state): State<AppState>,
    CookieCaller(caller): CookieCaller,
) -> ApiResult<Response> {
    let user = state
        .store
        .user_by_id(caller.session.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    let secret = caller
        .cookie_secret
        .as_ref()
        .ok_or(ApiError::Unauthorized("authentication is required"))?;
    let roles = state
        .store
        .user_roles(user.id)
        .await?
        .map(|r| r.roles)
        .unwrap_or_default();
    Ok(no_store(
        Json(session_body(&caller.session, &user, &roles, secret)).into_response(),
    ))
}

/// DELETE /v1/session: ends the session server-side and clears the cookie.
pub async fn logout(
    State(state): State<AppState>,
    CookieCaller(caller): CookieCaller,
) -> ApiResult<Response> {
    state
        .revoke_session(caller.session.id, RevokeReason::Logout)
        .await?;
    tracing::info!(sid = %caller.session.id, "cookie logout");
    Ok(cleared_cookie(&state))
}

/// 204 that also removes the session cookie.
pub fn cleared_cookie(state: &AppState) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, state.cookie.clear());
    response
}
