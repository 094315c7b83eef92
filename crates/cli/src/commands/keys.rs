//! `latchkey keys …`: the signing keys kept in the store.
use crate::context::{Ctx, runtime_for_command};
use crate::output::{Table, emit, json, relative, rfc3339, when};
use anyhow::Result;
use clap::Subcommand;
use latchkey_store::StoredKey;
use serde_json::json;
use std::path::Path;
use time::OffsetDateTime;

#[derive(Subcommand)]
pub enum KeysCommand {
    /// List the signing keys: every one is published in the JWKS; one signs.
    ///
    /// Status: `active` signs new tokens now; `pending` is published and starts signing at its
    /// activation time; `retiring` was superseded (or is of another algorithm) and stays
    /// published until every token it signed has expired, then is deleted.
    List {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Create a new signing key: published now, signing after `keys.publish_delay`.
    ///
    /// Running servers pick it up within seconds. On a store with no key yet, the first key is
    /// created too (active at once), as `latchkey serve` would.
    Rotate {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

impl KeysCommand {
    pub fn run(self, config_path: Option<&Path>) -> Result<()> {
        runtime_for_command()?.block_on(async move {
            let ctx = Ctx::open(config_path).await?;
            match self {
                KeysCommand::List { json } => list(&ctx, json).await,
                KeysCommand::Rotate { json } => rotate(&ctx, json).await,
            }
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Pending,
    Retiring,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Active => "active",
            Status::Pending => "pending",
            Status::Retiring => "retiring",
        }
    }
}

/// The key that signs at `now`, by the server's own rule.
fn signer<'a>(keys: &'a [StoredKey], algorithm: &str, now: OffsetDateTime) -> Option<&'a str> {
    let algorithm = algorithm.parse().ok()?;
    latchkey_server::keys::signing_key(keys, algorithm, now).map(|k| k.kid.as_str())
}

/// Each key's status: active when it is the signer of its algorithm and that algorithm is in
/// use (`algorithms`: access tokens, ID tokens).
fn statuses(keys: &[StoredKey], algorithms: &[&str], now: OffsetDateTime) -> Vec<Status> {
    let signing: Vec<&str> = algorithms
        .iter()
        .filter_map(|alg| signer(keys, alg, now))
        .collect();
    keys.iter()
        .map(|k| {
            if signing.contains(&k.kid.as_str()) {
                Status::Active
            } else if k.activates_at > now {
                Status::Pending
            } else {
                Status::Retiring
            }
        })
        .collect()
}

fn key_json(k: &StoredKey, status: Status) -> serde_json::Value {
    json!({
        "kid": k.kid,
        "algorithm": k.algorithm,
        "created_at": rfc3339(k.created_at),
        "activates_at": rfc3339(k.activates_at),
        "status": status.as_str(),
    })
}

async fn list(ctx: &Ctx, as_json: bool) -> Result<()> {
    let keys = ctx
        .store
        .signing_keys()
        .await
        .map_err(|e| ctx.store_error(e))?;
    // Shown under the `kid` they are published with (a first key's is its thumbprint).
    let keys: Vec<StoredKey> = keys
        .into_iter()
        .map(|mut k| {
            if let Ok(kid) = latchkey_server::keys::published_kid(&k) {
                k.kid = kid;
            }
            k
        })
        .collect();
    let now = OffsetDateTime::now_utc();
    let algorithm = ctx.config.access_token.algorithm.as_str();
    let in_use = latchkey_server::keys::algorithms_in_use(
        ctx.config.access_token.algorithm,
        ctx.config.id_token.algorithm,
    );
    let in_use: Vec<&str> = in_use.iter().map(|a| a.as_str()).collect();
    let statuses = statuses(&keys, &in_use, now);
    if as_json {
        return json(&json!({
            "algorithm": algorithm,
            "keys": keys.iter().zip(&statuses).map(|(k, s)| key_json(k, *s)).collect::<Vec<_>>(),
        }));
    }
    if keys.is_empty() {
        return emit(
            "no signing keys yet: `latchkey serve` or `latchkey keys rotate` creates the first",
        );
    }
    let mut table = Table::new(&["KID", "ALGORITHM", "CREATED", "ACTIVATES", "STATUS"]);
    for (k, status) in keys.iter().zip(&statuses) {
        let status = match status {
            Status::Pending => format!("pending (signs {})", relative(k.activates_at, now)),
            other => other.as_str().to_string(),
        };
        table.row(vec![
            k.kid.clone(),
            k.algorithm.clone(),
            when(k.created_at),
            when(k.activates_at),
            status,
        ]);
    }
    emit(&table.render())
}

async fn rotate(ctx: &Ctx, as_json: bool) -> Result<()> {
    let before = ctx
        .store
        .signing_keys()
        .await
        .map_err(|e| ctx.store_error(e))?;
    // Building the state creates the first key when there is none (as `serve` does).
    let state = ctx.state().await?;
    let after_start = ctx
        .store
        .signing_keys()
        .await
        .map_err(|e| ctx.store_error(e))?;
    let first = after_start
        .iter()
        .find(|k| !before.iter().any(|b| b.kid == k.kid))
        .map(|k| k.kid.clone());
    let kid = latchkey_server::keys::rotate(&state)
        .await
        .map_err(|e| ctx.label.describe_start(e))?;
    let keys = ctx
        .store
        .signing_keys()
        .await
        .map_err(|e| ctx.store_error(e))?;
    let now = OffsetDateTime::now_utc();
    let Some(new) = keys.iter().find(|k| k.kid == kid) else {
        return Err(crate::failure::runtime(format!(
            "key {kid} was stored but is gone from the store already"
        )));
    };
    if as_json {
        return json(&json!({
            "kid": new.kid,
            "algorithm": new.algorithm,
            "created_at": rfc3339(new.created_at),
            "activates_at": rfc3339(new.activates_at),
            "first_key_created": first,
        }));
    }
    let mut lines = Vec::new();
    if let Some(first) = first {
        lines.push(format!(
            "the store had no signing key: created {first}, signing now"
        ));
    }
    lines.push(format!(
        "new signing key {} ({}) published now; it signs from {} ({})",
        new.kid,
        new.algorithm,
        when(new.activates_at),
        relative(new.activates_at, now)
    ));
    emit(&lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(kid: &str, alg: &str, activates_in_min: i64) -> StoredKey {
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
        StoredKey {
            kid: kid.into(),
            algorithm: alg.into(),
            private_der: Vec::new(),
            created_at: t0,
            activates_at: t0 + time::Duration::minutes(activates_in_min),
        }
    }

    #[test]
    fn statuses_follow_the_servers_signing_rule() {
        let t0 = OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("valid");
        let keys = vec![
            key("old", "EdDSA", 0),
            key("new", "EdDSA", 5),
            key("es", "ES256", 0),
        ];
        let at = |m| t0 + time::Duration::minutes(m);
        assert_eq!(
            statuses(&keys, &["EdDSA"], at(1)),
            [Status::Active, Status::Pending, Status::Retiring]
        );
        assert_eq!(
            statuses(&keys, &["EdDSA"], at(6)),
            [Status::Retiring, Status::Active, Status::Retiring]
        );
        // Two algorithms in use (access and ID tokens): each has its active key.
        assert_eq!(
            statuses(&keys, &["EdDSA", "ES256"], at(6)),
            [Status::Retiring, Status::Active, Status::Active]
        );
    }
}
