//! The caller's sessions, both kinds: list, revoke one, revoke all others.
use crate::caller::{AuthKind, Caller};
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::rfc3339;
use crate::routes::session::cleared_cookie;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use latchkey_core::{RevokeReason, Session, SessionId, SessionKind};
use latchkey_store::UserChange;
use serde_json::{Value, json};

/// Live sessions of the caller's user; cookie sessions past their idle timeout are left out.
async fn live_sessions(state: &AppState, caller: &Caller) -> ApiResult<Vec<Session>> {
    let now = state.clock.now();
    let idle_cutoff = now - state.config.session.idle_timeout.as_time();
    Ok(state
        .store
        .live_sessions_of_user(caller.session.user_id, now)
        .await?
        .into_iter()
        .filter(|s| s.kind == SessionKind::Token || s.last_seen_at > idle_cutoff)
        .collect())
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Vec<Value>>> {
    let sessions = live_sessions(&state, &caller).await?;
    Ok(Json(
        sessions
            .iter()
            .map(|s| {
                json!({
                    "id": s.id.to_string(),
                    "kind": s.kind.as_str(),
                    "created_at": rfc3339(s.created_at),
                    "last_seen_at": rfc3339(s.last_seen_at),
                    "expires_at": rfc3339(s.expires_at),
                    "user_agent": s.user_agent,
                    "ip": s.ip,
                    "client_id": s.client_id,
                    "current": s.id == caller.session.id,
                })
            })
            .collect(),
    ))
}

/// DELETE /v1/sessions/{id}: only the caller's own sessions; anything else is 404.
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let id = SessionId::parse(&id).ok_or(ApiError::NotFound)?;
    let target = state
        .store
        .session(id)
        .await?
        .filter(|s| s.user_id == caller.session.user_id);
    let Some(target) = target.filter(|s| !s.is_revoked()) else {
        return Err(ApiError::NotFound);
    };
    state
        .revoke_session(target.id, RevokeReason::UserRevoked)
        .await?;
    tracing::info!(sid = %target.id, by = %caller.session.id, "session revoked by its user");
    if target.id == caller.session.id && caller.kind == AuthKind::Cookie {
        return Ok(cleared_cookie(&state));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn revoke_others(State(state): State<AppState>, caller: Caller) -> ApiResult<StatusCode> {
    // The epoch advances and this session is re-stamped with it in the same step: logins of
    // the user still in flight (on other devices) cannot create a session afterwards.
    let advanced = state
        .advance_user_epoch(
            caller.session.user_id,
            UserChange::SessionsOnly,
            Some(caller.session.id),
            RevokeReason::UserRevoked,
        )
        .await?
        .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    tracing::info!(count = advanced.revoked.len(), by = %caller.session.id, "other sessions revoked by their user");
    Ok(StatusCode::NO_CONTENT)
}
