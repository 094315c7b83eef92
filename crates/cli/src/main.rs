//! `latchkey`: the command line of the Latchkey authentication service.
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use latchkey_server::config::{Config, LogFormat};
use latchkey_server::{AppState, SystemClock, serve};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "latchkey",
    version,
    about = "Latchkey: logins, sessions and tokens for your apps, in one binary",
    long_about = "Latchkey is an authentication service: users log in once, then every request can be \
                  trusted, checked fast, and cut off at once.\n\nWith no configuration, `latchkey serve` \
                  listens on 127.0.0.1:8080 and keeps everything in the SQLite file latchkey.db in the \
                  current directory."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve(ConfigArg),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets redacted).
    Check(ConfigArg),
}

#[derive(clap::Args)]
struct ConfigArg {
    /// Configuration file (TOML). Default: ./latchkey.toml if it exists, else built-in defaults.
    /// Every key can also be set with a LATCHKEY_<KEY> environment variable.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => run_serve(args),
        Command::Config(ConfigCommand::Check(args)) => run_config_check(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &ConfigArg) -> Result<Config> {
    let loaded = Config::load(args.config.as_deref())?;
    for warning in &loaded.warnings {
        eprintln!("latchkey: warning: {warning}");
    }
    Ok(loaded.config)
}

fn run_config_check(args: ConfigArg) -> Result<()> {
    let config = load_config(&args)?;
    println!("configuration is valid");
    let shown =
        latchkey_server::config::to_pretty_json(&config).context("printing the configuration")?;
    println!("{shown}");
    Ok(())
}

fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run_serve(args: ConfigArg) -> Result<()> {
    let config = load_config(&args)?;
    init_logging(&config);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let store = latchkey_store::connect(&config.database)
            .await
            .with_context(|| {
                format!(
                    "opening the store `database` = {:?}",
                    latchkey_store::redact_url(&config.database)
                )
            })?;
        if config.clients.is_empty() {
            tracing::warn!("no [[clients]] configured: /oauth/token will refuse every request");
        }
        let listen = config.listen;
        let issuer = config.issuer();
        let state = AppState::new(config, store, Arc::new(SystemClock))
            .await
            .context("preparing the server state")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on `listen` = {listen}"))?;
        tracing::info!(%listen, %issuer, "latchkey is serving");
        serve(listener, state).await.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    })
}
