//! A resource server protected by Latchkey access tokens.
//!
//! `GET /hello` answers `{"sub","scope"}` of the caller's token; anything else about the token
//! (missing, invalid, revoked) is answered by the layer with 401, or 503 while the revocation
//! feed cannot be read. Configuration, by argument or environment variable:
//!
//! | argument | variable | default |
//! |---|---|---|
//! | `--issuer URL` | `LATCHKEY_ISSUER` | `http://127.0.0.1:8080` |
//! | `--audience AUD` | `LATCHKEY_AUDIENCE` | `api` |
//! | `--listen ADDR` | `LISTEN` | `127.0.0.1:9000` |
//! | `--feed-token TOKEN` | `LATCHKEY_FEED_TOKEN` | none |

use axum::{Json, Router, routing::get};
use latchkey_verify::{AccessToken, Verifier, VerifierConfig};
use serde_json::{Value, json};

async fn hello(AccessToken(claims): AccessToken) -> Json<Value> {
    Json(json!({ "sub": claims.sub, "scope": claims.scope }))
}

/// `--name value` from the command line, else the environment variable, else the default.
fn setting(args: &[String], name: &str, var: &str, default: Option<&str>) -> Option<String> {
    args.windows(2)
        .find(|pair| pair[0] == name)
        .map(|pair| pair[1].clone())
        .or_else(|| std::env::var(var).ok())
        .or_else(|| default.map(str::to_owned))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args: Vec<String> = std::env::args().collect();
    let issuer = setting(
        &args,
        "--issuer",
        "LATCHKEY_ISSUER",
        Some("http://127.0.0.1:8080"),
    );
    let audience = setting(&args, "--audience", "LATCHKEY_AUDIENCE", Some("api"));
    let listen = setting(&args, "--listen", "LISTEN", Some("127.0.0.1:9000"));
    let (Some(issuer), Some(audience), Some(listen)) = (issuer, audience, listen) else {
        return Err("issuer, audience and listen are required".into());
    };

    let verifier = Verifier::start(VerifierConfig {
        feed_token: setting(&args, "--feed-token", "LATCHKEY_FEED_TOKEN", None),
        ..VerifierConfig::new(issuer, audience)
    })
    .await?;
    let app = Router::new()
        .route("/hello", get(hello))
        .layer(verifier.layer());

    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!(addr = %listener.local_addr()?, "resource server listening");
    axum::serve(listener, app).await?;
    Ok(())
}
