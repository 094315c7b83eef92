//! The admin API, behind `Authorization: Bearer <admin_token>`. Without an admin token in the
//! config every admin route answers 404, as if it did not exist.
use crate::error::{ApiError, ApiResult};
use crate::net::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use latchkey_core::{RevokeReason, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed admin authentications allowed per IP per window; past it even the right token is
/// refused until the window ends, so guessing gets no signal.
const ADMIN_FAILURES: u32 = 10;
const ADMIN_WINDOW: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct AdminGate(Mutex<HashMap<String, (u32, Instant)>>);

impl AdminGate {
    fn blocked_for(&self, ip: &str) -> Option<u64> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, (_, start)| start.elapsed() < ADMIN_WINDOW);
        map.get(ip)
            .filter(|(count, _)| *count >= ADMIN_FAILURES)
            .map(|(_, start)| {
                ADMIN_WINDOW
                    .saturating_sub(start.elapsed())
                    .as_secs()
                    .max(1)
            })
    }

    fn record_failure(&self, ip: &str) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(ip.to_string()).or_insert((0, Instant::now()));
        entry.0 += 1;
    }

    /// Every check of a presented admin token goes through here (the admin API and
    /// `/oauth/introspect`), so each is throttled alike: 429 while `ip` is over its failure
    /// budget (even for the right token), else whether `presented` is the admin token, a
    /// wrong one counted and logged.
    pub fn check(&self, expected: &str, ip: &str, presented: &str) -> ApiResult<bool> {
        if let Some(retry_after_secs) = self.blocked_for(ip) {
            return Err(ApiError::RateLimited { retry_after_secs });
        }
        if crate::auth::secrets_equal(expected, presented) {
            return Ok(true);
        }
        self.record_failure(ip);
        tracing::warn!(target: "latchkey::security", ip = %ip, "admin authentication failed");
        Ok(false)
    }
}

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = &state.config.admin_token else {
            return Err(ApiError::NotFound);
        };
        let peer = ClientInfo::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        let presented = crate::auth::bearer_token(&parts.headers).unwrap_or("");
        if !state
            .admin_gate
            .check(expected.expose(), &peer.ip, presented)?
        {
            return Err(ApiError::Unauthorized(
                "the admin token is missing or wrong",
            ));
        }
        Ok(Admin)
    }
}

async fn existing_user(state: &AppState, id: &str) -> ApiResult<UserId> {
    let id = UserId::parse(id).ok_or(ApiError::NotFound)?;
    state
        .store
        .user_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(id)
}

/// Ban: refuse further logins and end every session, both kinds.
pub async fn ban(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = existing_user(&state, &id).await?;
    let now = state.clock.now();
    // Ban first: a login racing this call either fails or is revoked just below.
    state.store.set_banned(id, Some(now)).await?;
    let revoked = state
        .revoke_user_sessions(id, None, RevokeReason::Banned)
        .await?;
    tracing::warn!(target: "latchkey::security", user_id = %id, revoked = revoked.len(), "user banned");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn unban(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = existing_user(&state, &id).await?;
    state.store.set_banned(id, None).await?;
    tracing::warn!(target: "latchkey::security", user_id = %id, "user unbanned");
    Ok(StatusCode::NO_CONTENT)
}

pub async fn revoke_sessions(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = existing_user(&state, &id).await?;
    let revoked = state
        .revoke_user_sessions(id, None, RevokeReason::Admin)
        .await?;
    tracing::warn!(target: "latchkey::security", user_id = %id, revoked = revoked.len(), "all sessions revoked by admin");
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes a new signing key now; it signs after `keys.publish_delay`.
pub async fn rotate_keys(
    State(state): State<AppState>,
    _: Admin,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let kid = crate::keys::rotate(&state).await.map_err(|e| match e {
        crate::state::StartError::Store(e) => ApiError::from(e),
        other => ApiError::Internal(other.to_string()),
    })?;
    Ok(axum::Json(serde_json::json!({ "kid": kid })))
}
