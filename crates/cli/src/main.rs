//! `latchkey`: the command line of the Latchkey authentication service.
//!
//! `serve` runs the HTTP server; every other command works directly on the store named by the
//! configuration (`database`), so it can run beside a live server or with none.
use anyhow::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod commands;
mod context;
mod failure;
mod output;

use commands::keys::KeysCommand;
use commands::session::SessionCommand;
use commands::user::UserCommand;
use failure::{Exit, exit_code, one_line};

const AFTER_HELP: &str = "\
Configuration:
  Every command reads ./latchkey.toml (or --config FILE), then LATCHKEY_* environment
  variables, exactly as `latchkey serve` does, and works directly on the store named by
  `database` (default: the SQLite file latchkey.db in the current directory).

Output:
  Text for people (aligned tables); add --json for one JSON document on stdout.
  Errors are one line on stderr: `latchkey: error: ...`.

Exit codes:
  0  success
  1  runtime failure: store unreachable or locked, invalid configuration, I/O error
  2  usage error: unknown command or option, missing or malformed argument or input
  3  not found: no such user or session
  4  conflict: e.g. the username is taken

Examples:
  latchkey serve
  latchkey config check
  latchkey user add alice
  latchkey user ban alice
  latchkey session list --user alice --json
  latchkey keys rotate

Reference: docs/cli.md";

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Latchkey: logins, sessions and tokens for your apps, in one binary",
    long_about = "Latchkey is an authentication service: users log in once, then every request can be \
                  trusted, checked fast, and cut off at once.\n\nWith no configuration, `latchkey serve` \
                  listens on 127.0.0.1:8080 and keeps everything in the SQLite file latchkey.db in the \
                  current directory. The other commands manage that store: users, sessions, signing keys.",
    after_help = AFTER_HELP,
    arg_required_else_help = true
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// Configuration file (TOML) [default: ./latchkey.toml if present, else built-in
    /// defaults]. LATCHKEY_<KEY> environment variables override it.
    #[arg(long, short, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (stop it with Ctrl-C or SIGTERM).
    ///
    /// Listens on `listen` (default 127.0.0.1:8080; LATCHKEY_LISTEN=ADDR:PORT to change it) with
    /// the issuer following it unless `issuer` is set. On the first start it creates the store
    /// (default: latchkey.db here) and a signing key. Stopping drains in-flight requests.
    #[command(after_help = SERVE_EXIT_CODES)]
    Serve,
    /// Create or upgrade the store's schema, and say what was done.
    ///
    /// `serve` and every other command also migrate when they open the store; run this ahead of
    /// a deployment to do it (and see it) on its own.
    Migrate {
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users: add, list, show, ban, unban, set a password.
    #[command(subcommand)]
    User(UserCommand),
    /// List and revoke sessions (logins).
    #[command(subcommand)]
    Session(SessionCommand),
    /// List and rotate the signing keys of access tokens.
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration; print every effective value and where it came from
    /// (default, file or environment variable), secrets redacted.
    Check {
        /// Print one JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// The footer of every command's `--help`: its exit codes.
const EXIT_CODES: &str = "Exit codes: 0 ok, 1 runtime failure (store unreachable or locked, bad config), \
                          2 usage error, 3 no such user or session, 4 conflict (see `latchkey --help`)";

/// `serve` has no users or sessions to look up: only these apply.
const SERVE_EXIT_CODES: &str = "Exit codes: 0 stopped by Ctrl-C or SIGTERM after draining requests, \
                                1 could not start or failed (bad config, port in use, store unreachable), \
                                2 usage error\n\nExamples:\n  latchkey serve\n  \
                                latchkey serve --config /etc/latchkey/latchkey.toml\n  \
                                LATCHKEY_LISTEN=127.0.0.1:9000 latchkey serve";

/// Adds [`EXIT_CODES`] under the help of every command that does something (not the groups),
/// unless it states its own.
fn with_exit_codes(command: clap::Command) -> clap::Command {
    let states_its_own = command
        .get_after_help()
        .is_some_and(|h| h.to_string().contains("Exit codes:"));
    let leaf = !command.has_subcommands() && !states_its_own;
    let command = command.mut_subcommands(with_exit_codes);
    if !leaf {
        return command;
    }
    let footer = match command.get_after_help() {
        Some(existing) => format!("{existing}\n\n{EXIT_CODES}"),
        None => EXIT_CODES.to_string(),
    };
    command.after_help(footer)
}

fn parse() -> Result<Cli, clap::Error> {
    let mut command = Cli::command();
    command = command.mut_subcommands(with_exit_codes);
    let matches = command.try_get_matches()?;
    Cli::from_arg_matches(&matches)
}

fn run(cli: Cli) -> Result<()> {
    let config = cli.global.config.as_deref();
    match cli.command {
        Command::Serve => commands::serve::run(config),
        Command::Migrate { json } => commands::migrate::run(config, json),
        Command::Config(ConfigCommand::Check { json }) => commands::config::check(config, json),
        Command::User(c) => c.run(config),
        Command::Session(c) => c.run(config),
        Command::Keys(c) => c.run(config),
    }
}

/// A clap error (several lines with usage) as one line: the problem, then the usage.
fn clap_one_line(error: &clap::Error) -> String {
    let text = error.render().to_string();
    let (problem, rest) = text.split_once("\nUsage:").unwrap_or((text.as_str(), ""));
    let mut line = String::new();
    for part in problem.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if part.starts_with("For more information") {
            continue;
        }
        if !line.is_empty() {
            line.push_str(if part.starts_with("tip:") { "; " } else { " " });
        }
        line.push_str(part);
    }
    let line = line.strip_prefix("error: ").unwrap_or(&line).to_string();
    let usage = rest.lines().next().map(str::trim).unwrap_or_default();
    if usage.is_empty() {
        format!("{line} (see --help)")
    } else {
        format!("{line}; usage: {usage} (see --help)")
    }
}

/// A command group given without its command (`latchkey user`): one line naming the choices.
fn missing_command_line(help: &str) -> String {
    let usage = help
        .lines()
        .find_map(|l| l.strip_prefix("Usage: "))
        .unwrap_or("latchkey <COMMAND>")
        .trim();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .collect();
    format!(
        "a command is missing; usage: {usage}; commands: {} (see --help)",
        commands.join(", ")
    )
}

/// Panics are bugs: one line naming it, no backtrace.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "latchkey: error: internal error{at}: {}; this is a bug, please report it",
            message.lines().next().unwrap_or_default()
        );
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                // Bare `latchkey`: the help is the best answer for a newcomer.
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                    if std::env::args_os().len() <= 1 =>
                {
                    let help = e.render().to_string();
                    eprintln!("{}", help.trim_end());
                    ExitCode::from(Exit::Usage as u8)
                }
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    eprintln!(
                        "latchkey: error: {}",
                        missing_command_line(&e.render().to_string())
                    );
                    ExitCode::from(Exit::Usage as u8)
                }
                _ => {
                    eprintln!("latchkey: error: {}", clap_one_line(&e));
                    ExitCode::from(Exit::Usage as u8)
                }
            };
        }
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli))) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("latchkey: error: {}", one_line(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
        // The hook has printed the one line.
        Err(_) => ExitCode::from(Exit::Runtime as u8),
    }
}
