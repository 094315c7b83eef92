//! Sign-up and "who am I".
use crate::caller::Caller;
use crate::error::{ApiError, ApiResult};
use crate::extract::JsonBody;
use crate::net::ClientInfo;
use crate::rfc3339;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use latchkey_core::{RevokeReason, User, UserId, Username};
use latchkey_store::UserChange;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    username: String,
    password: String,
}

pub async fn sign_up(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonBody(body): JsonBody<SignUp>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !state.config.signup {
        return Err(ApiError::Forbidden(
            "sign-up is disabled on this server".into(),
        ));
    }
    // Each sign-up costs an Argon2 hash: throttle it like a login.
    state.throttles.login_per_ip.check(&client.throttle_key)?;
    let username =
        Username::parse(&body.username).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let password = state
        .passwords
        .normalize_new(&body.password)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    if state
        .store
        .user_by_username(username.as_str())
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict("username is taken"));
    }
    let user = User {
        id: UserId::new(),
        username: username.as_str().to_string(),
        password_hash: state.passwords.hash(password).await?,
        created_at: state.clock.now(),
        banned_at: None,
        session_epoch: 0,
    };
    state.store.create_user(&user).await.map_err(|e| match e {
        latchkey_store::StoreError::Conflict(_) => ApiError::Conflict("username is taken"),
        other => other.into(),
    })?;
    tracing::info!(user_id = %user.id, "user signed up");
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": user.id.to_string(), "username": user.username, "created_at": rfc3339(user.created_at)}),
        ),
    ))
}

pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    // Usernames never change: the cache forward auth uses spares a store read per call.
    let user_id = caller.session.user_id;
    let username = state.usernames.get(&state, user_id).await?;
    // The user's roles as they are now (a token's own may be older).
    let roles = state
        .store
        .user_roles(user_id)
        .await?
        .map(|r| r.roles)
        .unwrap_or_default();
    Ok(Json(json!({
        "id": user_id.to_string(),
        "username": username,
        "session_id": caller.session.id.to_string(),
        "roles": roles,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    current_password: String,
    new_password: String,
}

/// POST /v1/password: needs the current password; ends every other session of the user.
pub async fn change_password(
    State(state): State<AppState>,
    client: ClientInfo,
    caller: Caller,
    JsonBody(body): JsonBody<ChangePassword>,
) -> ApiResult<StatusCode> {
    let user = state
        .store
        .user_by_id(caller.session.user_id)
        .await?
        .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    // The current password is a login in disguise: same throttles, same failure count.
    let charged = crate::login::charge_account_budgets(&state, &user.username, &client)?;
    if !state
        .passwords
        .verify(&body.current_password, Some(&user.password_hash))
        .await?
    {
        charged.keep();
        crate::login::record_failure("password_change_failed", "account", &user.username, &client);
        tracing::info!(target: "latchkey::security", user_id = %user.id, "password change refused: wrong current password");
        return Err(ApiError::Forbidden(
            "the current password is incorrect".into(),
        ));
    }
    let new = state
        .passwords
        .normalize_new(&body.new_password)
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let hash = state.passwords.hash(new).await?;
    // One store step: the new hash, the new session epoch (logins in flight with the old
    // password cannot create a session after it), this session re-stamped, every other one
    // revoked. It applies in full or not at all, so a failure (503) can be retried as is.
    let advanced = state
        .advance_user_epoch(
            user.id,
            UserChange::Password(&hash),
            Some(caller.session.id),
            RevokeReason::PasswordChanged,
        )
        .await?
        .ok_or(ApiError::Unauthorized("the user no longer exists"))?;
    tracing::info!(target: "latchkey::security", user_id = %user.id, revoked = advanced.revoked.len(), kept = advanced.kept, "password changed; other sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}
