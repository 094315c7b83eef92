//! Checking a username and password: shared by the password grant and cookie login.
use crate::error::ApiError;
use crate::metrics;
use crate::net::ClientInfo;
use crate::state::AppState;
use latchkey_core::{User, Username};

pub enum LoginRefused {
    /// Unknown user or wrong password: the caller cannot tell which.
    BadCredentials,
    /// Right password, banned account.
    Banned,
}

/// Throttles, then verifies. Unknown users are verified against a dummy hash so they cost the
/// same time as a wrong password.
pub async fn check_credentials(
    state: &AppState,
    mode: &'static str,
    peer: &ClientInfo,
    username: &str,
    password: &str,
) -> Result<Result<User, LoginRefused>, ApiError> {
    state.throttles.login_per_ip.check(&peer.throttle_key)?;
    let normalized = Username::parse(username).ok();
    // Throttle by the normalised name so look-alike spellings share one bucket.
    let account_key = normalized.as_ref().map_or(username, |u| u.as_str());
    state.throttles.login_per_account.check(account_key)?;

    let user = match &normalized {
        Some(name) => state.store.user_by_username(name.as_str()).await?,
        None => None,
    };
    let ok = state
        .passwords
        .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
        .await?;
    match user {
        Some(user) if ok && user.is_banned() => {
            tracing::info!(target: "latchkey::security", user_id = %user.id, "login refused: account banned");
            metrics::login(mode, "banned");
            Ok(Err(LoginRefused::Banned))
        }
        Some(user) if ok => {
            metrics::login(mode, "ok");
            Ok(Ok(user))
        }
        _ => {
            tracing::info!(target: "latchkey::security", ip = %peer.ip, "login failed");
            metrics::login(mode, "failed");
            Ok(Err(LoginRefused::BadCredentials))
        }
    }
}
