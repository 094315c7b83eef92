//! The admin API, behind `Authorization: Bearer <admin_token>`. Without an admin token in the
//! config every admin route answers 404, as if it did not exist.
use crate::error::{ApiError, ApiResult};
use crate::extract::Path;
use crate::net::ClientInfo;
use crate::state::AppState;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use latchkey_core::{RevokeReason, UserId};
use latchkey_store::UserChange;
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
    /// `/oauth/introspect`), so each is throttled alike: 429 while `ip` (the client's throttle
    /// key: its address, or its IPv6 /64) is over its failure
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
            .check(expected.expose(), &peer.throttle_key, presented)?
        {
            return Err(ApiError::Unauthorized(
                "the admin token is missing or wrong",
            ));
        }
        Ok(Admin)
    }
}

/// The user a path names: by id, or (as the CLI does) by username, compared after the same
/// normalisation as logins. 404 when neither matches.
async fn find_user(state: &AppState, id_or_name: &str) -> ApiResult<UserId> {
    if let Some(id) = UserId::parse(id_or_name)
        && state.store.user_by_id(id).await?.is_some()
    {
        return Ok(id);
    }
    let Ok(name) = latchkey_core::Username::parse(id_or_name) else {
        return Err(ApiError::NotFound);
    };
    state
        .store
        .user_by_username(name.as_str())
        .await?
        .map(|u| u.id)
        .ok_or(ApiError::NotFound)
}

/// Ban: refuse further logins and end every session, both kinds, in one store step that also
/// advances the user's session epoch, so a login already past its password check cannot
/// create a session afterwards and no session is refreshed after it (invariant 7).
pub async fn ban(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = find_user(&state, &id).await?;
    let now = state.clock.now();
    let advanced = state
        .advance_user_epoch(id, UserChange::Ban(now), None, RevokeReason::Banned)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::warn!(target: "latchkey::security", user_id = %id, revoked = advanced.revoked.len(), "user banned");
    Ok(StatusCode::NO_CONTENT)
}

/// Unban. Advances the epoch as well, so a login that read the banned user is never let in by
/// a quick unban; sessions the ban ended stay ended.
pub async fn unban(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = find_user(&state, &id).await?;
    state
        .advance_user_epoch(id, UserChange::Unban, None, RevokeReason::Admin)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::warn!(target: "latchkey::security", user_id = %id, "user unbanned");
    Ok(StatusCode::NO_CONTENT)
}

/// Every session of the user revoked, and logins in flight refused (the epoch advances).
pub async fn revoke_sessions(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = find_user(&state, &id).await?;
    let advanced = state
        .advance_user_epoch(id, UserChange::SessionsOnly, None, RevokeReason::Admin)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::warn!(target: "latchkey::security", user_id = %id, revoked = advanced.revoked.len(), "all sessions revoked by admin");
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

// ---- Roles (docs/decisions/0011) ----

/// The user as the admin API shows it.
async fn user_json(state: &AppState, id: UserId) -> ApiResult<serde_json::Value> {
    let user = state
        .store
        .user_by_id(id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let roles = state.store.user_roles(id).await?.unwrap_or_default();
    Ok(serde_json::json!({
        "id": user.id.to_string(),
        "username": user.username,
        "created_at": crate::rfc3339(user.created_at),
        "banned_at": user.banned_at.map(crate::rfc3339),
        "roles": roles.roles,
    }))
}

/// `GET /admin/v1/users/{id}`: `{"id","username","created_at","banned_at","roles"}`.
pub async fn user(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let id = find_user(&state, &id).await?;
    Ok(axum::Json(user_json(&state, id).await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRoles {
    roles: Vec<String>,
}

/// `PUT /admin/v1/users/{id}/roles {"roles":[...]}`: replaces the user's roles; answers like
/// `GET /admin/v1/users/{id}`. Removing any role makes the tokens minted before the change
/// stale at every feed-following verifier, without ending a session: one feed entry per live
/// session of the user, in the same store step. Granting needs none.
pub async fn set_roles(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    crate::extract::JsonBody(body): crate::extract::JsonBody<SetRoles>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let id = find_user(&state, &id).await?;
    let roles = latchkey_core::normalize_roles(&body.roles)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let at = state.clock.now();
    let changed = state
        .store
        .set_user_roles(id, &roles, at, state.policy.access_ttl)
        .await?
        .ok_or(ApiError::NotFound)?;
    if !changed.stale.is_empty() {
        // Known here at once, even if reading the log back below fails.
        let before = latchkey_core::stale_before(at).unix_timestamp();
        for sid in &changed.stale {
            state
                .follower
                .note_local_stale(*sid, before, at + state.policy.access_ttl);
        }
        if let Err(e) = state.follower.poll_once(&state).await {
            tracing::warn!(error = %e, "role change recorded; reading the log back failed");
        }
    }
    tracing::warn!(
        target: "latchkey::security",
        user_id = %id,
        roles = ?changed.roles,
        previous = ?changed.previous,
        stale_sessions = changed.stale.len(),
        "user roles set by admin"
    );
    Ok(axum::Json(user_json(&state, id).await?))
}
