//! `latchkey session …`: list and revoke logins (cookie sessions and token families alike).
use crate::context::{Ctx, runtime_for_command};
use crate::failure::{not_found, usage};
use crate::output::{Table, clip, emit, json, rfc3339, when};
use anyhow::Result;
use clap::Subcommand;
use latchkey_core::{RevokeReason, Session, SessionId};
use latchkey_store::UserChange;
use serde_json::json;
use std::path::Path;

#[derive(Subcommand)]
pub enum SessionCommand {
    /// List the live sessions of a user (not revoked, not past their absolute end).
    #[command(after_help = "Example:\n  latchkey session list --user alice")]
    List {
        /// User id or username.
        #[arg(long, short, value_name = "USER")]
        user: String,
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke one session by its id, or every session of a user with --user.
    ///
    /// The revocation is recorded in the revocation feed, so servers and verifiers refuse the
    /// session's access tokens within seconds, exactly as with the HTTP API.
    #[command(after_help = "Examples:\n  latchkey session revoke 6f1c…\n  \
        latchkey session revoke --user alice")]
    #[command(group(clap::ArgGroup::new("target").required(true).args(["sid", "user"])))]
    Revoke {
        /// The session id (sid) to revoke.
        #[arg(value_name = "SID")]
        sid: Option<String>,
        /// Revoke every session of this user (id or username) instead.
        #[arg(long, short, value_name = "USER")]
        user: Option<String>,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn session_json(s: &Session) -> serde_json::Value {
    json!({
        "id": s.id.to_string(),
        "user_id": s.user_id.to_string(),
        "kind": s.kind.as_str(),
        "client_id": s.client_id,
        "scope": s.scope,
        "created_at": rfc3339(s.created_at),
        "last_seen_at": rfc3339(s.last_seen_at),
        "expires_at": rfc3339(s.expires_at),
        "ip": s.ip,
        "user_agent": s.user_agent,
    })
}

impl SessionCommand {
    pub fn run(self, config_path: Option<&Path>) -> Result<()> {
        runtime_for_command()?.block_on(async move {
            let ctx = Ctx::open(config_path).await?;
            match self {
                SessionCommand::List { user, json } => list(&ctx, &user, json).await,
                SessionCommand::Revoke {
                    sid: Some(sid),
                    json,
                    ..
                } => revoke_one(&ctx, &sid, json).await,
                SessionCommand::Revoke {
                    user: Some(user),
                    json,
                    ..
                } => revoke_all(&ctx, &user, json).await,
                SessionCommand::Revoke { .. } => Err(usage(
                    "give a session id, or --user USER for all of a user's",
                )),
            }
        })
    }
}

async fn list(ctx: &Ctx, spec: &str, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    let now = time::OffsetDateTime::now_utc();
    let mut sessions = ctx
        .store
        .live_sessions_of_user(user.id, now)
        .await
        .map_err(|e| ctx.store_error(e))?;
    sessions.sort_by_key(|s| std::cmp::Reverse(s.last_seen_at));
    if as_json {
        return json(&json!({
            "user": {"id": user.id.to_string(), "username": user.username},
            "sessions": sessions.iter().map(session_json).collect::<Vec<_>>(),
        }));
    }
    if sessions.is_empty() {
        return emit(&format!("{} has no live sessions", user.username));
    }
    let mut table = Table::new(&[
        "SID",
        "KIND",
        "CLIENT",
        "CREATED",
        "LAST SEEN",
        "EXPIRES",
        "IP",
        "USER AGENT",
    ]);
    for s in &sessions {
        table.row(vec![
            s.id.to_string(),
            s.kind.as_str().into(),
            s.client_id.clone().unwrap_or_else(|| "-".into()),
            when(s.created_at),
            when(s.last_seen_at),
            when(s.expires_at),
            s.ip.clone().unwrap_or_else(|| "-".into()),
            s.user_agent
                .as_deref()
                .map_or_else(|| "-".into(), |ua| clip(ua, 40)),
        ]);
    }
    emit(&table.render())
}

async fn revoke_one(ctx: &Ctx, sid: &str, as_json: bool) -> Result<()> {
    let id = SessionId::parse(sid.trim()).ok_or_else(|| {
        usage(format!(
            "{sid:?} is not a session id (a UUID, as shown by `latchkey session list`)"
        ))
    })?;
    let Some(session) = ctx
        .store
        .session(id)
        .await
        .map_err(|e| ctx.store_error(e))?
    else {
        return Err(not_found(format!("no such session: {id}")));
    };
    let revoked = if session.is_revoked() {
        false
    } else {
        ctx.state()
            .await?
            .revoke_session(id, RevokeReason::Admin)
            .await
            .map_err(|e| ctx.store_error(e))?
    };
    if as_json {
        return json(&json!({
            "id": id.to_string(),
            "user_id": session.user_id.to_string(),
            "revoked": revoked,
            "already_revoked": !revoked,
        }));
    }
    emit(&if revoked {
        format!("revoked session {id}")
    } else {
        format!("session {id} was already revoked; nothing changed")
    })
}

async fn revoke_all(ctx: &Ctx, spec: &str, as_json: bool) -> Result<()> {
    let user = ctx.find_user(spec).await?;
    // As DELETE /admin/v1/users/{id}/sessions: the epoch advances, so logins in flight
    // cannot create a session afterwards.
    let revoked = ctx
        .state()
        .await?
        .advance_user_epoch(user.id, UserChange::SessionsOnly, None, RevokeReason::Admin)
        .await
        .map_err(|e| ctx.store_error(e))?
        .map(|advanced| advanced.revoked)
        .ok_or_else(|| not_found(format!("no such user: {spec:?} (deleted meanwhile)")))?;
    if as_json {
        return json(&json!({
            "user": {"id": user.id.to_string(), "username": user.username},
            "revoked_sessions": revoked.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    emit(&format!(
        "revoked {} session{} of {}",
        revoked.len(),
        if revoked.len() == 1 { "" } else { "s" },
        user.username
    ))
}
