//! `latchkey config check`: validates the configuration and shows every effective value with
//! where it came from (built-in default, the file, or an environment variable).
use crate::context::{config_file, load_config};
use crate::output::{Table, emit, json};
use anyhow::{Context, Result};
use figment::{Figment, Source};
use latchkey_server::config::{Config, ENV_PREFIX};
use serde_json::{Map, Value, json};
use std::path::Path;

/// Where one value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Default,
    /// Not set: computed from other values (`issuer`, `allowed_origins`).
    Derived(&'static str),
    File(String),
    Env(String),
}

impl Origin {
    fn describe(&self) -> String {
        match self {
            Origin::Default => "default".into(),
            Origin::Derived(from) => format!("default ({from})"),
            Origin::File(path) => format!("file {path}"),
            Origin::Env(var) => format!("env {var}"),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Origin::Default => json!({"source": "default"}),
            Origin::Derived(from) => json!({"source": "default", "derived": from}),
            Origin::File(path) => json!({"source": "file", "file": path}),
            Origin::Env(var) => json!({"source": "env", "variable": var}),
        }
    }
}

/// The effective configuration as JSON: secrets redacted, derived values filled in.
fn effective(config: &Config) -> Result<Value> {
    let mut value = serde_json::to_value(config).context("showing the configuration")?;
    if let Value::Object(map) = &mut value {
        if config.issuer.is_none() {
            map.insert("issuer".into(), config.issuer().into());
        }
        if config.allowed_origins.is_none() {
            map.insert("allowed_origins".into(), config.allowed_origins().into());
        }
    }
    redact(None, &mut value);
    Ok(value)
}

/// Shown instead of a secret.
const REDACTED: &str = "<redacted>";

/// Whether a key names a secret by itself (tokens, secrets, passwords).
fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key == "secret"
        || key == "password"
        || key.ends_with("_secret")
        || key.ends_with("_token")
        || key.ends_with("_password")
        || key.ends_with("_key")
}

/// Whether a key holds a connection URL that may carry a password (`database`, `redis`).
fn is_url_key(key: &str) -> bool {
    matches!(key, "database" | "redis") || key.ends_with("_url")
}

/// Replaces every secret in the shown configuration, wherever it sits (nested tables,
/// `[[clients]]` entries): values of secret-named keys become `<redacted>`, passwords in
/// connection URLs `***`. The config types already serialise their secrets redacted; this
/// also covers plain-string keys (`database`, `redis`) and any secret key added later.
fn redact(key: Option<&str>, value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                redact(Some(k), v);
            }
        }
        Value::Array(items) => {
            for item in items {
                redact(key, item);
            }
        }
        Value::String(s) => match key {
            Some(k) if is_secret_key(k) => *s = REDACTED.into(),
            Some(k) if is_url_key(k) => *s = latchkey_store::redact_url(s),
            _ => {}
        },
        _ => {}
    }
}

/// Every leaf key (tables are walked, arrays are one value), sorted.
fn leaves(prefix: &str, value: &Value, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&key, v, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// The variable that set `key`: `LATCHKEY_REFRESH__REUSE_INTERVAL`, or the variable of an
/// enclosing table given inline (`LATCHKEY_REFRESH='{ttl="1d"}'`).
fn env_var_for(key: &str) -> String {
    let present: Vec<String> = std::env::vars()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with(ENV_PREFIX))
        .collect();
    let parts: Vec<&str> = key.split('.').collect();
    for n in (1..=parts.len()).rev() {
        let candidate = format!("{ENV_PREFIX}{}", parts[..n].join("__").to_ascii_uppercase());
        if let Some(found) = present.iter().find(|k| k.eq_ignore_ascii_case(&candidate)) {
            return found.clone();
        }
    }
    format!(
        "{ENV_PREFIX}{}",
        key.to_ascii_uppercase().replace('.', "__")
    )
}

fn origin_of(figment: &Figment, config: &Config, key: &str) -> Origin {
    match key {
        "issuer" if config.issuer.is_none() => return Origin::Derived("from listen"),
        "allowed_origins" if config.allowed_origins.is_none() => {
            return Origin::Derived("the issuer's origin");
        }
        _ => {}
    }
    match figment.find_metadata(key) {
        Some(m) if m.name.contains("environment") => Origin::Env(env_var_for(key)),
        Some(m) => match &m.source {
            Some(Source::File(path)) => Origin::File(path.display().to_string()),
            _ => Origin::Default,
        },
        None => Origin::Default,
    }
}

/// A value as a table cell: strings bare, `(none)` for absent, other values as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => other.to_string(),
    }
}

pub fn check(config_path: Option<&Path>, as_json: bool) -> Result<()> {
    let loaded = match load_config(config_path) {
        Ok(loaded) => loaded,
        Err(e) if as_json => {
            // Scripts read stdout: an invalid configuration is a document too (and exit 1).
            json(&json!({
                "valid": false,
                "file": config_file(config_path).map(|p| p.display().to_string()),
                "errors": e.to_string().lines().collect::<Vec<_>>(),
            }))?;
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let file = config_file(config_path).map(|p| p.display().to_string());
    let config = &loaded.config;
    let value = effective(config)?;
    let mut keys = Vec::new();
    leaves("", &value, &mut keys);
    let origins: Vec<(String, Value, Origin)> = keys
        .into_iter()
        .map(|(key, v)| {
            let origin = origin_of(&loaded.figment, config, &key);
            (key, v, origin)
        })
        .collect();

    if as_json {
        let sources: Map<String, Value> = origins
            .iter()
            .map(|(k, _, o)| (k.clone(), o.to_json()))
            .collect();
        return json(&json!({
            "valid": true,
            "file": file,
            "config": value,
            "sources": sources,
            "warnings": loaded.warnings.iter().cloned().chain(config.warnings()).collect::<Vec<_>>(),
        }));
    }

    let mut table = Table::new(&["KEY", "VALUE", "SOURCE"]);
    for (key, v, origin) in &origins {
        table.row(vec![key.clone(), cell(v), origin.describe()]);
    }
    let from = match &file {
        Some(path) => format!("file {path}, then LATCHKEY_* environment variables"),
        None => format!(
            "no file (no ./{} here): built-in defaults and LATCHKEY_* environment variables",
            latchkey_server::config::DEFAULT_CONFIG_FILE
        ),
    };
    emit(&format!(
        "configuration is valid\nread from: {from}\nsecrets are shown as <redacted>\n\n{}",
        table.render()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_walk_tables_but_not_arrays() {
        let mut out = Vec::new();
        leaves(
            "",
            &json!({"a": 1, "t": {"b": "x"}, "list": [{"c": 1}]}),
            &mut out,
        );
        let keys: Vec<&str> = out.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "list", "t.b"]);
    }

    #[test]
    fn secrets_and_url_passwords_are_redacted_everywhere() {
        let mut v = json!({
            "database": "postgres://u:dbpass@h/db?sslmode=require&password=qpass",
            "redis": "rediss://:redispass@h:6380",
            "admin_token": "admin-secret",
            "metrics_token": "metrics-secret",
            "clients": [{"id": "c", "secret": "client-secret"}],
            "bff": {"routes": [{"prefix": "/api/"}]},
            "access_token": {"ttl": "15m"},
        });
        redact(None, &mut v);
        let shown = v.to_string();
        for secret in [
            "dbpass",
            "qpass",
            "redispass",
            "admin-secret",
            "metrics-secret",
            "client-secret",
        ] {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
        }
        assert_eq!(v["clients"][0]["id"], "c");
        assert_eq!(v["access_token"]["ttl"], "15m");
        assert_eq!(v["redis"], "rediss://:***@h:6380");
    }
}
