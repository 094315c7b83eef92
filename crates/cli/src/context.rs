//! What every command starts from: the loaded configuration and the store it names.
use crate::failure::{StoreLabel, describe_api, not_found, runtime, usage};
use crate::output::note;
use anyhow::{Context, Result};
use latchkey_core::{User, UserId, Username};
use latchkey_server::config::{Config, ConfigError, DEFAULT_CONFIG_FILE, Loaded};
use latchkey_server::{AppState, SystemClock};
use latchkey_store::Store;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads the configuration exactly as `serve` does; prints its warnings on stderr.
pub fn load_config(path: Option<&Path>) -> Result<Loaded> {
    let loaded = Config::load(path).map_err(|e| match e {
        // A --config naming no file is a mistake on the command line.
        ConfigError::MissingFile(p) => usage(format!(
            "configuration file {} does not exist (given with --config)",
            p.display()
        )),
        other => runtime(other.to_string()),
    })?;
    for warning in &loaded.warnings {
        note(&format!("warning: {warning}"));
    }
    Ok(loaded)
}

/// The file the configuration came from, if any (same rule as [`Config::load`]).
pub fn config_file(path: Option<&Path>) -> Option<PathBuf> {
    match path {
        Some(p) => Some(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
        None if Path::new(DEFAULT_CONFIG_FILE).exists() => Some(
            std::path::absolute(DEFAULT_CONFIG_FILE)
                .unwrap_or_else(|_| PathBuf::from(DEFAULT_CONFIG_FILE)),
        ),
        None => None,
    }
}

/// A single-threaded runtime: commands do a few store calls and at most one password hash.
pub fn runtime_for_command() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A command's working set: the configuration and the open (migrated) store.
pub struct Ctx {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub label: StoreLabel,
}

impl Ctx {
    /// Loads the configuration and opens the store it names.
    pub async fn open(config_path: Option<&Path>) -> Result<Self> {
        let config = load_config(config_path)?.config;
        let in_memory = config.database.starts_with("memory:")
            || (config.database.starts_with("sqlite:")
                && crate::failure::sqlite_file(&config.database).is_none());
        if in_memory {
            note("warning: `database` is an in-memory store; nothing this command does is kept");
        }
        let label = StoreLabel::new(&config.database);
        let store = latchkey_server::open_store(&config)
            .await
            .map_err(|e| label.describe(&e))
            .context("opening the store")?;
        Ok(Self {
            config,
            store,
            label,
        })
    }

    /// The server's state on this store, for changes that must happen exactly as the HTTP API
    /// makes them (revocations with their feed events, key rotation). Generates the first
    /// signing key if the store has none, as `serve` would.
    pub async fn state(&self) -> Result<AppState> {
        AppState::new(
            self.config.clone(),
            self.store.clone(),
            Arc::new(SystemClock),
        )
        .await
        .map_err(|e| self.label.describe_start(e))
        .context("loading the signing keys")
    }

    pub fn store_error(&self, error: latchkey_store::StoreError) -> anyhow::Error {
        self.label.describe(&error)
    }

    /// A user named by id or by username.
    pub async fn find_user(&self, spec: &str) -> Result<User> {
        let id = UserId::parse(spec.trim());
        if let Some(id) = id
            && let Some(user) = self
                .store
                .user_by_id(id)
                .await
                .map_err(|e| self.store_error(e))?
        {
            return Ok(user);
        }
        match Username::parse(spec) {
            Ok(name) => self
                .store
                .user_by_username(name.as_str())
                .await
                .map_err(|e| self.store_error(e))?
                .ok_or_else(|| not_found(format!("no such user: {spec:?}"))),
            Err(_) if id.is_some() => Err(not_found(format!("no such user: {spec:?}"))),
            Err(e) => Err(usage(format!(
                "{spec:?} is neither a user id nor a valid username: {e}"
            ))),
        }
    }
}

/// Longest password read from stdin; the policy's maximum is far below it.
const STDIN_PASSWORD_LIMIT: u64 = 64 * 1024;

/// A new password: one line from stdin with `--password-stdin`, else typed twice at a
/// no-echo prompt. Never from an argument, never echoed or printed.
pub fn read_new_password(from_stdin: bool, username: &str) -> Result<String> {
    if from_stdin {
        return read_stdin_password();
    }
    if !std::io::stdin().is_terminal() {
        return Err(usage(
            "no terminal to ask for the password on; pipe it in and add --password-stdin",
        ));
    }
    let first = rpassword::prompt_password(format!("New password for {username}: "))
        .context("reading the password from the terminal")?;
    let second = rpassword::prompt_password("Repeat the password: ")
        .context("reading the password from the terminal")?;
    if first != second {
        return Err(usage("the two passwords differ; nothing was changed"));
    }
    Ok(first)
}

fn read_stdin_password() -> Result<String> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(STDIN_PASSWORD_LIMIT + 1)
        .read_to_end(&mut bytes)
        .context("reading the password from standard input")?;
    if bytes.len() as u64 > STDIN_PASSWORD_LIMIT {
        return Err(usage(
            "the password on standard input is longer than 64 KiB",
        ));
    }
    let mut text = String::from_utf8(bytes)
        .map_err(|_| usage("the password on standard input is not UTF-8 text"))?;
    // One trailing line break is the end of the line, not part of the password.
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(usage(
            "no password on standard input (--password-stdin reads one line from it)",
        ));
    }
    if text.contains('\n') {
        return Err(usage(
            "the password on standard input must be a single line",
        ));
    }
    Ok(text)
}

/// Checks the policy like sign-up does and hashes; the error never contains the password.
pub async fn hash_new_password(
    passwords: &latchkey_server::password::Passwords,
    password: &str,
) -> Result<String> {
    let normalized = passwords
        .normalize_new(password)
        .map_err(|e| usage(format!("password rejected: {e}")))?;
    passwords.hash(normalized).await.map_err(describe_api)
}
