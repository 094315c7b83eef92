//! Checking a username and password: shared by the password grant and cookie login.
use crate::error::ApiError;
use crate::metrics;
use crate::net::ClientInfo;
use crate::state::AppState;
use latchkey_core::username::MAX_USERNAME_CHARS;
use latchkey_core::{User, Username};

pub enum LoginRefused {
    /// Unknown user or wrong password: the caller cannot tell which.
    BadCredentials,
    /// Right password, banned account.
    Banned,
}

/// Throttles, then verifies. Unknown users are verified against a dummy hash so they cost the
/// same time as a wrong password.
///
/// `rate_limit.login_per_account` counts failed logins per (account, client address), and 3x
/// that per account over all addresses (API.md): someone guessing from one address runs out
/// long before the owner, logging in from another, is refused. A refused (429) attempt and a
/// successful one take nothing from either budget.
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
    let account = normalized.as_ref().map_or(username, |u| u.as_str());
    let charged = charge_account_budgets(state, account, peer)?;

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
            charged.keep();
            record_failure("login_failed", mode, account, peer);
            metrics::login(mode, "failed");
            Ok(Err(LoginRefused::BadCredentials))
        }
    }
}

/// A failure taken in advance from both account budgets; given back on drop unless the
/// attempt really failed ([`Charged::keep`]).
pub struct Charged<'a> {
    state: &'a AppState,
    account_at_address: String,
    account: String,
    kept: bool,
}

impl Charged<'_> {
    /// The attempt failed: the failure stays counted.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let throttles = &self.state.throttles;
            throttles.login_per_account.refund(&self.account_at_address);
            throttles.login_per_account_all.refund(&self.account);
        }
    }
}

/// Takes one failure from the per-(account, address) budget and from the account's budget
/// over all addresses before the password is checked (429 when either is spent), so guesses
/// sent at once cannot overrun them while Argon2 runs. Logins and password changes share it.
pub fn charge_account_budgets<'a>(
    state: &'a AppState,
    account: &str,
    peer: &ClientInfo,
) -> Result<Charged<'a>, ApiError> {
    let account_at_address = account_key(account, &peer.throttle_key);
    let throttles = &state.throttles;
    throttles.login_per_account.charge(&account_at_address)?;
    if let Err(e) = throttles.login_per_account_all.charge(account) {
        throttles.login_per_account.refund(&account_at_address);
        return Err(e);
    }
    Ok(Charged {
        state,
        account_at_address,
        account: account.to_string(),
        kept: false,
    })
}

/// The per-(account, address) throttle key; `\0` cannot occur in either part.
pub fn account_key(account: &str, ip: &str) -> String {
    format!("{account}\0{ip}")
}

/// Logs a failed password check (already counted by [`charge_account_budgets`]) as a security
/// event in one stable line for fail2ban and the like (target `latchkey::security`):
///
/// `WARN latchkey::security: authentication failed event=login_failed mode=token username=alice ip=203.0.113.7`
///
/// `event` is `login_failed` (a login, `mode` `token` or `cookie`) or
/// `password_change_failed` (a wrong current password); `username` is the normalised name
/// (or the name as typed, when it is not a valid one), at most 64 characters, with
/// whitespace, control characters, quotes, backslashes and `=` shown as `?`; `ip` is the
/// client address (the throttle counts IPv6 clients per /64). A fail2ban filter: `failregex = event=login_failed .* ip=<HOST>$`.
pub fn record_failure(event: &'static str, mode: &'static str, account: &str, peer: &ClientInfo) {
    let username = loggable_username(account);
    tracing::warn!(target: "latchkey::security", event = %event, mode = %mode, username = %username, ip = %peer.ip, "authentication failed");
}

/// A username safe to put in a log line: bounded, one token, no quoting needed.
pub fn loggable_username(name: &str) -> String {
    let shown: String = name
        .chars()
        .take(MAX_USERNAME_CHARS)
        .map(|c| {
            if c.is_whitespace() || c.is_control() || matches!(c, '"' | '\\' | '=' | '\'') {
                '?'
            } else {
                c
            }
        })
        .collect();
    if shown.is_empty() { "?".into() } else { shown }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_usernames_are_one_bounded_token() {
        assert_eq!(loggable_username("alice"), "alice");
        assert_eq!(loggable_username("a b=\"c\"\n"), "a?b??c??");
        assert_eq!(loggable_username(""), "?");
        assert_eq!(loggable_username(&"x".repeat(500)).chars().count(), 64);
    }
}
