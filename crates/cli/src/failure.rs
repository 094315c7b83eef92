//! Exit codes and the one-line error messages the CLI prints.
//!
//! Every failure ends as `latchkey: error: <one line>` on stderr and one of the exit codes
//! below; a [`Failure`] anywhere in an error's chain picks the code, anything else is a
//! runtime failure (1).
use latchkey_server::error::ApiError;
use latchkey_server::state::StartError;
use latchkey_store::StoreError;
use std::fmt;

/// Exit codes, documented in `--help` and docs/cli.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command could not do its work: store unreachable or locked, invalid config, I/O.
    Runtime = 1,
    /// The command line is wrong: unknown option, missing or malformed argument (clap's code).
    Usage = 2,
    /// The named user or session does not exist.
    NotFound = 3,
    /// The change conflicts with what is stored (e.g. the username is taken).
    Conflict = 4,
}

/// An error that carries its exit code.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn failure(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Failure {
        exit,
        message: message.into(),
    })
}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    failure(Exit::Usage, message)
}

pub fn not_found(message: impl Into<String>) -> anyhow::Error {
    failure(Exit::NotFound, message)
}

pub fn conflict(message: impl Into<String>) -> anyhow::Error {
    failure(Exit::Conflict, message)
}

pub fn runtime(message: impl Into<String>) -> anyhow::Error {
    failure(Exit::Runtime, message)
}

/// The exit code for an error: the first [`Failure`] in its chain, else runtime.
pub fn exit_code(error: &anyhow::Error) -> Exit {
    error
        .chain()
        .find_map(|e| e.downcast_ref::<Failure>())
        .map_or(Exit::Runtime, |f| f.exit)
}

/// The whole chain on one line (config errors list one problem per line: joined with "; ").
pub fn one_line(error: &anyhow::Error) -> String {
    let text = format!("{error:#}");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Where a store lives, for messages: the SQLite file or the redacted URL.
#[derive(Debug, Clone)]
pub struct StoreLabel {
    url: String,
    sqlite_file: Option<String>,
}

impl StoreLabel {
    pub fn new(url: &str) -> Self {
        Self {
            url: latchkey_store::redact_url(url),
            sqlite_file: sqlite_file(url).map(|p| p.display().to_string()),
        }
    }

    /// Describes a store error in words an operator can act on.
    pub fn describe(&self, error: &StoreError) -> anyhow::Error {
        let text = error.to_string();
        let target = self
            .sqlite_file
            .clone()
            .unwrap_or_else(|| format!("the store {}", self.url));
        if text.contains("database is locked") || text.contains("(code: 5)") {
            return runtime(format!(
                "database is locked: another process holds {target}; stop it or retry"
            ));
        }
        if text.contains("(code: 14)") || text.contains("unable to open database file") {
            return runtime(format!(
                "cannot open the database {target}: the file cannot be opened or created \
                 (does its directory exist, and may this user write there?)"
            ));
        }
        if text.contains("(code: 26)") || text.contains("file is not a database") {
            return runtime(format!("{target} is not a SQLite database"));
        }
        match error {
            StoreError::Conflict(what) => conflict(what.to_string()),
            // The Redis half of the store names itself.
            StoreError::Unavailable(cause) if cause.starts_with("Redis") => runtime(text),
            _ => runtime(format!("store `database` = {:?}: {text}", self.url)),
        }
    }

    /// Same for errors of the server's state (signing keys) built on the store.
    pub fn describe_start(&self, error: StartError) -> anyhow::Error {
        match error {
            StartError::Store(e) => self.describe(&e),
            other => runtime(other.to_string()),
        }
    }
}

/// The file of a `sqlite:` URL, if it names one (not `sqlite::memory:`).
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    use std::str::FromStr;
    if !url.starts_with("sqlite:") {
        return None;
    }
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
    let path = options.get_filename();
    let text = path.to_string_lossy();
    if text.is_empty() || text.starts_with(":memory:") || text.starts_with("file:") {
        return None;
    }
    Some(path.to_path_buf())
}

/// The message of a server error, with the cause the HTTP layer would hide.
pub fn describe_api(error: ApiError) -> anyhow::Error {
    match error {
        ApiError::Internal(cause) | ApiError::Unavailable(cause) => runtime(cause),
        other => runtime(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locked_and_unopenable_databases_get_plain_messages() {
        let label = StoreLabel::new("sqlite://data/latchkey.db");
        let locked = StoreError::Unavailable(
            "error returned from database: (code: 5) database is locked".into(),
        );
        assert_eq!(
            label.describe(&locked).to_string(),
            "database is locked: another process holds data/latchkey.db; stop it or retry"
        );
        let missing = StoreError::Unavailable(
            "error returned from database: (code: 14) unable to open database file".into(),
        );
        assert!(
            label
                .describe(&missing)
                .to_string()
                .starts_with("cannot open the database data/latchkey.db")
        );
        assert_eq!(
            exit_code(&label.describe(&StoreError::Conflict("username is taken"))),
            Exit::Conflict
        );
    }

    #[test]
    fn chains_become_one_line_and_keep_their_code() {
        let e = not_found("no such user").context("showing a user");
        assert_eq!(exit_code(&e), Exit::NotFound);
        let multi = anyhow::anyhow!("configuration key `a`: bad\nconfiguration key `b`: worse");
        assert_eq!(
            one_line(&multi),
            "configuration key `a`: bad; configuration key `b`: worse"
        );
    }

    #[test]
    fn sqlite_files_are_found_in_urls() {
        assert_eq!(
            sqlite_file("sqlite://latchkey.db").as_deref(),
            Some(std::path::Path::new("latchkey.db"))
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/x.db?mode=rwc").as_deref(),
            Some(std::path::Path::new("/var/lib/x.db"))
        );
        assert_eq!(sqlite_file("memory:"), None);
        assert_eq!(sqlite_file("sqlite::memory:"), None);
    }
}
