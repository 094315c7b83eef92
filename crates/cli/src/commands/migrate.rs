//! `latchkey migrate`: opens the store, which brings its schema up to date, and reports what
//! that did. `serve` migrates at start too; this command lets an operator do it (and see it)
//! ahead of a deployment.
use crate::context::{load_config, runtime_for_command};
use crate::failure::{StoreLabel, sqlite_file};
use crate::output::{emit, json};
use anyhow::{Context, Result};
use serde_json::json;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Row};
use std::path::Path;
use std::str::FromStr;

/// One applied migration, as sqlx records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    version: i64,
    description: String,
}

/// The migrations recorded in an existing SQLite file; empty for a new or empty file.
async fn applied(url: &str, label: &StoreLabel) -> Result<Vec<Applied>> {
    let options = SqliteConnectOptions::from_str(url)
        .context("reading the SQLite URL")?
        .create_if_missing(false)
        .busy_timeout(std::time::Duration::from_secs(5));
    let mut conn = options
        .connect()
        .await
        .map_err(|e| label.describe(&latchkey_store::StoreError::Unavailable(e.to_string())))?;
    let exists: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(&mut conn)
    .await
    .map_err(|e| label.describe(&latchkey_store::StoreError::Unavailable(e.to_string())))?;
    if exists.is_none() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(&mut conn)
    .await
    .map_err(|e| label.describe(&latchkey_store::StoreError::Unavailable(e.to_string())))?;
    rows.iter()
        .map(|r| {
            Ok(Applied {
                version: r.try_get("version")?,
                description: r.try_get("description")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("reading the migration history")
}

pub fn run(config_path: Option<&Path>, as_json: bool) -> Result<()> {
    let config = load_config(config_path)?.config;
    let url = config.database.clone();
    let label = StoreLabel::new(&url);
    let shown = latchkey_store::redact_url(&url);
    runtime_for_command()?.block_on(async move {
        let file = sqlite_file(&url);
        let existed = file.as_deref().is_some_and(Path::exists);
        let before = if existed {
            applied(&url, &label).await?
        } else {
            Vec::new()
        };
        let store = latchkey_server::open_store(&config)
            .await
            .map_err(|e| label.describe(&e))
            .context("opening the store")?;
        drop(store);
        let Some(file) = file else {
            // memory: (or a backend without a readable history): opening it was the migration.
            if as_json {
                return json(&json!({
                    "database": shown,
                    "created": false,
                    "applied": [],
                    "version": null,
                }));
            }
            return emit(&format!(
                "migrated {shown}: any pending migrations were applied; its schema is up to date"
            ));
        };
        let after = applied(&url, &label).await?;
        let new: Vec<&Applied> = after.iter().filter(|a| !before.contains(a)).collect();
        let version = after.last().map(|a| a.version);
        if as_json {
            return json(&json!({
                "database": shown,
                "file": file.display().to_string(),
                "created": !existed,
                "applied": new.iter().map(|a| json!({"version": a.version, "description": a.description})).collect::<Vec<_>>(),
                "version": version,
            }));
        }
        let version = version.map_or_else(|| "none".into(), |v| v.to_string());
        let mut lines = Vec::new();
        if !existed {
            lines.push(format!("created the database {}", file.display()));
        }
        if new.is_empty() {
            lines.push(format!(
                "{} is up to date (schema version {version}); nothing to do",
                file.display()
            ));
        } else {
            lines.push(format!(
                "applied {} migration{} to {}:",
                new.len(),
                if new.len() == 1 { "" } else { "s" },
                file.display()
            ));
            for a in &new {
                lines.push(format!("  {:04}  {}", a.version, a.description));
            }
            lines.push(format!("schema version is now {version}"));
        }
        emit(&lines.join("\n"))
    })
}
