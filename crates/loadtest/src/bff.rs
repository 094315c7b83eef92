//! `latchkey-loadtest bff`: the Backend-for-Frontend proxy's overhead. The same trivial
//! upstream request, measured directly and through Latchkey's BFF route (session cookie in,
//! Bearer token out), in one run, beside the bare axum baseline. See scripts/bench-bff.sh.
use super::{Load, Worker, baseline, drive, expect_json, print_table, report_json, run_tag};
use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;
use std::time::Duration;

#[derive(Args, Clone)]
pub struct BffTarget {
    /// Base URL of the Latchkey server, e.g. http://127.0.0.1:18080
    #[arg(long)]
    url: String,
    /// Base URL of the upstream the BFF route points at, e.g. http://127.0.0.1:19000
    #[arg(long)]
    upstream: String,
    /// The BFF route's prefix on the Latchkey server.
    #[arg(long, default_value = "/api/")]
    prefix: String,
    /// The path requested under the upstream (directly) and under the prefix (through the BFF).
    #[arg(long, default_value = "ping")]
    path: String,
    /// Usernames are `<prefix>-<random>-<n>`.
    #[arg(long, default_value = "bff-bench")]
    user_prefix: String,
    #[command(flatten)]
    load: Load,
}

/// A keep-alive HTTP/1.1 client that sends `cookie` on every request (if any).
fn client_with_cookie(cookie: Option<&str>) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(cookie) = cookie {
        headers.insert(
            reqwest::header::COOKIE,
            cookie.parse().context("the session cookie as a header")?,
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .default_headers(headers)
        .build()
        .context("building the HTTP client")
}

/// Signs a user up and logs in with cookie mode; returns the `name=value` session cookie.
async fn cookie_session(base: &str, username: &str, password: &str) -> Result<String, String> {
    let http = client_with_cookie(None).map_err(|e| e.to_string())?;
    let user = json!({"username": username, "password": password});
    expect_json(http.post(format!("{base}/v1/users")).json(&user), 201).await?;
    let response = http
        .post(format!("{base}/v1/session"))
        .json(&user)
        .send()
        .await
        .map_err(|e| format!("login: {e}"))?;
    if response.status().as_u16() != 200 {
        return Err(format!("login: HTTP {}", response.status()));
    }
    response
        .headers()
        .get(reqwest::header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| "login without a Set-Cookie".to_string())
}

/// baseline, direct, bff; prints the table (or JSON) and the BFF's cost relative to direct.
pub async fn run(t: BffTarget) -> Result<()> {
    let load = &t.load;
    let base = t.url.trim_end_matches('/').to_string();
    let direct_url = format!("{}/{}", t.upstream.trim_end_matches('/'), t.path);
    let bff_url = format!("{base}{}{}", t.prefix, t.path);

    let mut results = vec![baseline(load).await?];

    let direct = (0..load.concurrency)
        .map(|_| {
            Ok(Worker::Hello {
                http: client_with_cookie(None)?,
                url: direct_url.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    results.push(drive("direct", direct, load).await?);

    let tag = run_tag();
    let setups: Vec<_> = (0..load.concurrency)
        .map(|n| {
            let base = base.clone();
            let username = format!("{}-{tag}-{n}", t.user_prefix);
            tokio::spawn(async move {
                let password = format!("{username}-password");
                cookie_session(&base, &username, &password).await
            })
        })
        .collect();
    let mut workers = Vec::new();
    for setup in setups {
        match setup.await.context("a setup task panicked")? {
            Ok(cookie) => workers.push(Worker::Hello {
                http: client_with_cookie(Some(&cookie))?,
                url: bff_url.clone(),
            }),
            Err(e) => bail!("signing up and logging in a benchmark user at {base}: {e}"),
        }
    }
    results.push(drive("bff", workers, load).await?);

    let (direct, bff) = (&results[1], &results[2]);
    let ratio = bff.rate() / direct.rate();
    let added_p50 = bff.percentile_ms(0.50) - direct.percentile_ms(0.50);
    let added_p99 = bff.percentile_ms(0.99) - direct.percentile_ms(0.99);
    if load.json {
        let mut report = report_json(load, &results);
        report["bff_vs_direct"] = json!({
            "throughput_ratio": ratio,
            "added_p50_ms": added_p50,
            "added_p99_ms": added_p99,
        });
        println!("{report:#}");
    } else {
        print_table(load, &results);
        println!(
            "bff vs direct: {:.1} % of the throughput, p50 {:+.2} ms, p99 {:+.2} ms",
            100.0 * ratio,
            added_p50,
            added_p99
        );
    }
    Ok(())
}
