//! Revocation reach: how long after Latchkey acknowledges a revocation a resource server that
//! follows the feed (with `latchkey-verify`) refuses the session's access token.
use anyhow::{Context, Result, bail};
use clap::Args;
use latchkey_verify::{Verifier, VerifierConfig, VerifyError};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[derive(Args, Clone)]
pub struct ReachTarget {
    /// Base URL of the Latchkey server.
    #[arg(long)]
    url: String,
    /// The server's `issuer` (default: the URL).
    #[arg(long)]
    issuer: Option<String>,
    /// A public client declared in the server's config.
    #[arg(long)]
    client_id: String,
    /// The audience of that client's tokens.
    #[arg(long, default_value = "api")]
    audience: String,
    /// Sessions to create and revoke.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Revocations in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How often the verifier polls the feed, in milliseconds (the crate's default is 250).
    #[arg(long, default_value_t = 250)]
    poll_ms: u64,
}

pub async fn run(t: ReachTarget) -> Result<()> {
    let base = t.url.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let username = format!("reach-{}", std::process::id());
    let password = format!("reach-password-{}", std::process::id());
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .context("signing up the benchmark user")?;
    if r.status() != 201 {
        bail!("sign-up refused: {}", r.text().await.unwrap_or_default());
    }

    eprintln!("reach: logging in {} sessions…", t.sessions);
    let mut sessions: Vec<(String, String)> = Vec::with_capacity(t.sessions);
    let mut logins = tokio::task::JoinSet::new();
    for _ in 0..t.sessions {
        while logins.len() >= 8 {
            sessions.push(logins.join_next().await.context("login task")???);
        }
        let (http, base, username, password, client) = (
            http.clone(),
            base.clone(),
            username.clone(),
            password.clone(),
            t.client_id.clone(),
        );
        logins.spawn(async move { login(&http, &base, &username, &password, &client).await });
    }
    while let Some(done) = logins.join_next().await {
        sessions.push(done.context("login task")??);
    }

    let mut config = VerifierConfig::new(
        t.issuer.clone().unwrap_or_else(|| base.clone()),
        t.audience.clone(),
    );
    config.jwks_url = Some(format!("{base}/.well-known/jwks.json"));
    config.feed_url = Some(format!("{base}/v1/revocations"));
    config.feed_poll_interval = Duration::from_millis(t.poll_ms);
    let verifier = Verifier::start(config)
        .await
        .context("starting the verifier")?;
    for (access, _) in &sessions {
        verifier
            .verify(access)
            .await
            .context("a fresh token was refused before any revocation")?;
    }

    eprintln!("reach: revoking them, {} at a time…", t.concurrency);
    let started = Instant::now();
    let mut reach: Vec<Duration> = Vec::with_capacity(sessions.len());
    let mut tasks = tokio::task::JoinSet::new();
    for (access, refresh) in sessions {
        while tasks.len() >= t.concurrency {
            reach.push(tasks.join_next().await.context("revoke task")???);
        }
        let (http, base, client, verifier) = (
            http.clone(),
            base.clone(),
            t.client_id.clone(),
            verifier.clone(),
        );
        tasks.spawn(async move {
            let r = http
                .post(format!("{base}/oauth/revoke"))
                .form(&[("token", refresh.as_str()), ("client_id", client.as_str())])
                .send()
                .await
                .context("revoke")?;
            if r.status() != 200 {
                bail!("revoke answered {}", r.status());
            }
            let acknowledged = Instant::now();
            loop {
                match verifier.verify(&access).await {
                    Err(VerifyError::Revoked) => return Ok(acknowledged.elapsed()),
                    Err(e) => bail!("refused for another reason: {e}"),
                    Ok(_) if acknowledged.elapsed() > Duration::from_secs(10) => {
                        bail!("still accepted after 10 s")
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        reach.push(done.context("revoke task")??);
    }
    let total = started.elapsed();
    reach.sort();
    let pct = |p: f64| reach[((reach.len() as f64 * p).ceil() as usize).clamp(1, reach.len()) - 1];
    println!(
        "revocation reach over {} sessions ({} concurrent revocations, feed polled every {} ms, {:.1} s total):",
        reach.len(),
        t.concurrency,
        t.poll_ms,
        total.as_secs_f64()
    );
    println!(
        "  p50 {:.0} ms   p90 {:.0} ms   p99 {:.0} ms   max {:.0} ms",
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.90).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        pct(1.0).as_secs_f64() * 1e3
    );
    Ok(())
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
    client: &str,
) -> Result<(String, String)> {
    let r = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", username),
            ("password", password),
            ("client_id", client),
        ])
        .send()
        .await
        .context("login")?;
    let body: Value = r.json().await.context("login body")?;
    match (
        body["access_token"].as_str(),
        body["refresh_token"].as_str(),
    ) {
        (Some(a), Some(r)) => Ok((a.to_string(), r.to_string())),
        _ => bail!("login refused: {body}"),
    }
}
