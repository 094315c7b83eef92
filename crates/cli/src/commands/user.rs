//! `latchkey user …`: accounts, straight on the store.
use crate::context::{Ctx, hash_new_password, read_new_password, runtime_for_command};
use crate::failure::{conflict, describe_api, usage};
use crate::output::{Table, emit, json, note, rfc3339, rfc3339_opt, when, when_opt};
use anyhow::Result;
use clap::Subcommand;
use latchkey_core::{RevokeReason, User, UserId, Username};
use latchkey_server::password::Passwords;
use latchkey_store::{StoreError, UserChange};
use serde_json::json;
use std::path::Path;

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user. Asks for the password twice (or reads it with --password-stdin).
    #[command(after_help = "Examples:\n  latchkey user add alice\n  \
        printf '%s\\n' \"$PASSWORD\" | latchkey user add alice --password-stdin --json")]
    Add {
        /// The new username (compared case-insensitively, like sign-up).
        username: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List users, ordered by username.
    #[command(after_help = "Example: the next page after bob\n  latchkey user list --after bob")]
    List {
        /// Show at most this many users (1-10000).
        #[arg(long, default_value_t = 100, value_name = "N",
              value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
        /// Start after this username (for paging).
        #[arg(long, value_name = "USERNAME")]
        after: Option<String>,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one user: id, username, created, banned, number of live sessions.
    Show {
        /// User id or username.
        user: String,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ban a user: refuses their logins and revokes every session, as the admin API does.
    Ban {
        /// User id or username.
        user: String,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Lift a ban. Sessions revoked by the ban stay revoked.
    Unban {
        /// User id or username.
        user: String,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Set a new password (policy-checked) and revoke every session of the user.
    SetPassword {
        /// User id or username.
        user: String,
        /// Read the password from the first line of standard input instead of prompting.
        #[arg(long)]
        password_stdin: bool,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show or change a user's roles. Removing a role makes the user's tokens minted before the
    /// change stale at every verifier that follows the revocation feed, without logging out.
    #[command(after_help = "Examples:\n  latchkey user roles alice\n  \
        latchkey user roles alice --set admin,billing:read\n  \
        latchkey user roles alice --add auditor --remove admin --json\n  \
        latchkey user roles alice --set ''    (removes every role)")]
    Roles {
        /// User id or username.
        user: String,
        /// Replace every role with these (comma-separated; empty for none).
        #[arg(long, value_name = "ROLES", conflicts_with_all = ["add", "remove"])]
        set: Option<String>,
        /// Grant a role (repeatable, or comma-separated).
        #[arg(long, value_name = "ROLE", value_delimiter = ',')]
        add: Vec<String>,
        /// Remove a role (repeatable, or comma-separated).
        #[arg(long, value_name = "ROLE", value_delimiter = ',')]
        remove: Vec<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn user_json(user: &User) -> serde_json::Value {
    json!({
        "id": user.id.to_string(),
        "username": user.username,
        "created_at": rfc3339(user.created_at),
        "banned": user.is_banned(),
        "banned_at": rfc3339_opt(user.banned_at),
    })
}

impl UserCommand {
    pub fn run(self, config_path: Option<&Path>) -> Result<()> {
        runtime_for_command()?.block_on(async move {
            let ctx = Ctx::open(config_path).await?;
            match self {
                UserCommand::Add {
                    username,
                    password_stdin,
                    json,
                } => add(&ctx, &username, password_stdin, json).await,
                UserCommand::List { limit, after, json } => {
                    list(&ctx, limit, after.as_deref(), json).await
                }
                UserCommand::Show { user, json } => show(&ctx, &user, json).await,
                UserCommand::Ban { user, json } => ban(&ctx, &user, json).await,
                UserCommand::Unban { user, json } => unban(&ctx, &user, json).await,
                UserCommand::SetPassword {
                    user,
                    password_stdin,
                    json,
                } => set_password(&ctx, &user, password_stdin, json).await,
                UserCommand::Roles {
                    user,
                    set,
                    add,
                    remove,
                    json,
                } => roles(&ctx, &user, set, add, remove, json).await,
            }
        })
    }
}

async fn add(ctx: &Ctx, username: &str, password_stdin: bool, as_json: bool) -> Result<()> {
    let name = Username::parse(username)
        .map_err(|e| usage(format!("invalid username {username:?}: {e}")))?;
    let taken = || conflict(format!("username {:?} is taken", name.as_str()));
    // Checked before asking for a password, and again by the insert (a race loses there).
    if ctx
        .store
        .user_by_username(name.as_str())
        .await
        .map_err(|e| ctx.store_error(e))?
        .is_some()
    {
        return Err(taken());
    }
    let password = read_new_password(password_stdin, name.as_str())?;
    let passwords = Passwords::new(&ctx.config.password).map_err(describe_api)?;
    let password_hash = hash_new_password(&passwords, &password).await?;
    drop(password);
    let user = User {
        id: UserId::new(),
        username: name.as_str().to_string(),
        password_hash,
        created_at: time::OffsetDateTime::now_utc(),
        banned_at: None,
        session_epoch: 0,
    };
    ctx.store.create_user(&user).await.map_err(|e| match e {
        StoreError::Conflict(_) => taken(),
        other => ctx.store_error(other),
    })?;
    if as_json {
        return json(&user_json(&user));
    }
    emit(&format!(
        "created user {} with id {}",
        user.username, user.id
    ))
}

async fn list(ctx: &Ctx, limit: u32, after: Option<&str>, as_json: bool) -> Result<()> {
    // Stored usernames are normalised: so is the starting point.
    let after = after
        .map(|a| Username::parse(a).map_or_else(|_| a.to_string(), |n| n.as_str().to_string()));
    let after = after.as_deref();
    // One more than asked, to know whether there is a next page.
    let mut users = ctx
        .store
        .list_users(after, limit.saturating_add(1))
        .await
        .map_err(|e| ctx.store_error(e))?;
    let more = users.len() > limit as usize;
    users.truncate(limit as usize);
    let next_after = more
        .then(|| users.last().map(|u| u.username.clone()))
        .flatten();
    if as_json {
        return json(&json!({
            "users": users.iter().map(user_json).collect::<Vec<_>>(),
            "next_after": next_after,
        }));
    }
    if users.is_empty() {
        return emit(if after.is_some() {
            "no users after that username"
        } else {
            "no users yet; add one with `latchkey user add USERNAME`"
        });
    }
    let mut table = Table::new(&["ID", "USERNAME", "CREATED", "BANNED"]);
    for u in &users {
        table.row(vec![
            u.id.to_string(),
            u.username.clone(),
            when(u.created_at),
            when_opt(u.banned_at),
        ]);
    }
    emit(&table.render())?;
    if let Some(next) = next_after {
        note(&format!(
            "more users follow; next page: latchkey user list --after {next}"
        ));
    }
    Ok(())
}

async fn show(ctx: &Ctx, spec: &str, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let now = time::OffsetDateTime::now_utc();
    let sessions = ctx
        .store
        .live_sessions_of_user(user.id, now)
        .await
        .map_err(|e| ctx.store_error(e))?;
    let roles = ctx
        .store
        .user_roles(user.id)
        .await
        .map_err(|e| ctx.store_error(e))?
        .unwrap_or_default()
        .roles;
    if as_json {
        let mut value = user_json(&user);
        value["live_sessions"] = sessions.len().into();
        value["roles"] = roles.into();
        return json(&value);
    }
    let banned = match user.banned_at {
        Some(t) => format!("yes, since {}", when(t)),
        None => "no".into(),
    };
    let mut table = Table::new(&["FIELD", "VALUE"]);
    table.row(vec!["id".into(), user.id.to_string()]);
    table.row(vec!["username".into(), user.username.clone()]);
    table.row(vec!["created".into(), when(user.created_at)]);
    table.row(vec!["banned".into(), banned]);
    table.row(vec!["live sessions".into(), sessions.len().to_string()]);
    table.row(vec!["roles".into(), roles_text(&roles)]);
    // Drop the header: a two-column record reads better without it.
    let text = table.render();
    emit(
        text.split_once('\n')
            .map_or(text.as_str(), |(_, rest)| rest),
    )
}

fn gone(spec: &str) -> anyhow::Error {
    crate::failure::not_found(format!("no such user: {spec:?} (deleted meanwhile)"))
}

async fn ban(ctx: &Ctx, spec: &str, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let state = ctx.state().await?;
    let now = state.clock.now();
    // As POST /admin/v1/users/{id}/ban: one store step bans, advances the session epoch (a
    // login racing it cannot create a session afterwards) and revokes every session.
    let Some(advanced) = state
        .advance_user_epoch(user.id, UserChange::Ban(now), None, RevokeReason::Banned)
        .await
        .map_err(|e| ctx.store_error(e))?
    else {
        return Err(gone(spec));
    };
    let revoked = advanced.revoked;
    if as_json {
        return json(&json!({
            "id": user.id.to_string(),
            "username": user.username,
            "banned": true,
            "banned_at": rfc3339(now),
            "revoked_sessions": revoked.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    emit(&format!(
        "banned user {} ({}); revoked {} session{}",
        user.username,
        user.id,
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" }
    ))
}

async fn unban(ctx: &Ctx, spec: &str, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let was_banned = user.is_banned();
    // As POST /admin/v1/users/{id}/unban: the epoch advances too.
    let state = ctx.state().await?;
    if state
        .advance_user_epoch(user.id, UserChange::Unban, None, RevokeReason::Admin)
        .await
        .map_err(|e| ctx.store_error(e))?
        .is_none()
    {
        return Err(gone(spec));
    }
    if as_json {
        return json(&json!({
            "id": user.id.to_string(),
            "username": user.username,
            "banned": false,
            "was_banned": was_banned,
        }));
    }
    emit(&if was_banned {
        format!("unbanned user {} ({})", user.username, user.id)
    } else {
        format!(
            "user {} ({}) was not banned; nothing changed",
            user.username, user.id
        )
    })
}

async fn set_password(ctx: &Ctx, spec: &str, password_stdin: bool, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let password = read_new_password(password_stdin, &user.username)?;
    let state = ctx.state().await?;
    let hash = hash_new_password(&state.passwords, &password).await?;
    drop(password);
    // One store step: the hash, the new epoch and every session revoked, all or nothing.
    let Some(advanced) = state
        .advance_user_epoch(
            user.id,
            UserChange::Password(&hash),
            None,
            RevokeReason::PasswordChanged,
        )
        .await
        .map_err(|e| ctx.store_error(e))?
    else {
        return Err(gone(spec));
    };
    let revoked = advanced.revoked;
    if as_json {
        return json(&json!({
            "id": user.id.to_string(),
            "username": user.username,
            "revoked_sessions": revoked.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    emit(&format!(
        "set a new password for {} ({}); revoked {} session{}",
        user.username,
        user.id,
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" }
    ))
}

fn roles_text(roles: &[String]) -> String {
    if roles.is_empty() {
        "(none)".into()
    } else {
        roles.join(",")
    }
}

/// `latchkey user roles`: as `PUT /admin/v1/users/{id}/roles` (one store step; a removal
/// appends the feed entries that make older tokens stale).
async fn roles(
    ctx: &Ctx,
    spec: &str,
    set: Option<String>,
    add: Vec<String>,
    remove: Vec<String>,
    as_json: bool,
) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let current = ctx
        .store
        .user_roles(user.id)
        .await
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| gone(spec))?
        .roles;
    let invalid = |e: latchkey_core::RoleError| usage(e.to_string());
    let wanted = match set {
        Some(list) => Some(
            latchkey_core::normalize_roles(list.split(',').filter(|r| !r.is_empty()))
                .map_err(invalid)?,
        ),
        None if add.is_empty() && remove.is_empty() => None,
        None => {
            let add = latchkey_core::normalize_roles(&add).map_err(invalid)?;
            let remove = latchkey_core::normalize_roles(&remove).map_err(invalid)?;
            let next = current
                .iter()
                .filter(|r| !remove.contains(r))
                .chain(add.iter().filter(|r| !remove.contains(r)));
            Some(latchkey_core::normalize_roles(next).map_err(invalid)?)
        }
    };
    let Some(wanted) = wanted else {
        // Only showing.
        if as_json {
            return json(&json!({
                "id": user.id.to_string(),
                "username": user.username,
                "roles": current,
            }));
        }
        return emit(&roles_text(&current));
    };
    let state = ctx.state().await?;
    let changed = state
        .store
        .set_user_roles(user.id, &wanted, state.clock.now(), state.policy.access_ttl)
        .await
        .map_err(|e| ctx.store_error(e))?
        .ok_or_else(|| gone(spec))?;
    if as_json {
        return json(&json!({
            "id": user.id.to_string(),
            "username": user.username,
            "roles": changed.roles,
            "previous": changed.previous,
            "stale_sessions": changed.stale.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    let mut text = format!(
        "roles of {} ({}): {}",
        user.username,
        user.id,
        roles_text(&changed.roles)
    );
    if !changed.stale.is_empty() {
        text.push_str(&format!(
            "; tokens minted before now are stale in {} session{} (no one is logged out)",
            changed.stale.len(),
            if changed.stale.len() == 1 { "" } else { "s" }
        ));
    }
    emit(&text)
}
