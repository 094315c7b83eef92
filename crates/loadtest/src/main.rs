//! `latchkey-loadtest`: closed-loop HTTP load against a running Latchkey server, beside a bare
//! axum "hello" baseline measured by the same load loop in the same process.
//!
//! Every virtual client owns one keep-alive connection and sends its next request as soon as
//! the previous one is answered. Requests that *start* inside the measured window (after the
//! warm-up) are counted; throughput is those successes divided by the time from the start of
//! the window until the last of them was answered. Latencies are kept per worker as
//! microseconds in a `Vec<u32>`, then merged and sorted for percentiles.
//!
//! The machine running this is usually also running the server, so absolute numbers are
//! pessimistic; compare each line with the baseline measured in the same run.
mod bff;
mod reach;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// How many error bodies each mode keeps to show.
const ERROR_SAMPLES: usize = 5;

#[derive(Parser)]
#[command(name = "latchkey-loadtest", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive an in-process bare axum server (GET /hello): the yardstick for the other modes.
    Baseline(Load),
    /// Each client signs up, logs in, then rotates its refresh token as fast as it can.
    Rotations(Target),
    /// Each client signs up, logs in, then calls GET /v1/me with its access token.
    Me(Target),
    /// Each client signs up, logs in with cookie mode, then calls GET /v1/session with its cookie.
    Session(Target),
    /// Forward auth: GET /v1/authorize with each client's access token.
    Authorize(Target),
    /// RFC 7662: POST /oauth/introspect of each client's access token (needs --confidential).
    Introspect(Target),
    /// Revocation reach: revoke sessions through the API while a latchkey-verify Verifier
    /// follows the feed; time from each revoke response to the verifier's first refusal.
    Reach(reach::ReachTarget),
    /// baseline, rotations and me back to back, as one table with ratios to the baseline.
    All(Target),
    /// baseline, then a trivial upstream request directly and through a BFF route (bff.rs).
    Bff(bff::BffTarget),
}

#[derive(Args, Clone)]
struct Load {
    /// Virtual clients, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds per mode.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Unmeasured seconds before each measurement (connections, caches, CPU clocks).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct Target {
    /// Base URL of the Latchkey server, e.g. http://127.0.0.1:18080. Several instances,
    /// comma-separated: the virtual clients are spread over them round-robin, each one staying
    /// on its instance (as behind a load balancer with keep-alive connections).
    #[arg(long)]
    url: String,
    /// A public client declared in the server's config.
    #[arg(long)]
    client_id: String,
    /// Usernames are `<prefix>-<random>-<n>`, so reruns against one database never collide.
    #[arg(long, default_value = "bench")]
    user_prefix: String,
    /// Passwords are `<prefix>-<random>-<n>` (long enough for the default policy).
    #[arg(long, default_value = "bench-password")]
    password_prefix: String,
    /// `id:secret` of a confidential client, for the introspect mode.
    #[arg(long)]
    confidential: Option<String>,
    #[command(flatten)]
    load: Load,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latchkey-loadtest: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let (load, results) = match cli.command {
        Command::Bff(t) => return bff::run(t).await,
        Command::Baseline(load) => (load.clone(), vec![baseline(&load).await?]),
        Command::Rotations(t) => (
            t.load.clone(),
            vec![against_server(&t, Mode::Rotate).await?],
        ),
        Command::Me(t) => (t.load.clone(), vec![against_server(&t, Mode::Me).await?]),
        Command::Session(t) => (
            t.load.clone(),
            vec![against_server(&t, Mode::Session).await?],
        ),
        Command::Authorize(t) => (
            t.load.clone(),
            vec![against_server(&t, Mode::Authorize).await?],
        ),
        Command::Introspect(t) => (
            t.load.clone(),
            vec![against_server(&t, Mode::Introspect).await?],
        ),
        Command::Reach(t) => return reach::run(t).await,
        Command::All(t) => {
            let mut results = vec![baseline(&t.load).await?];
            results.push(against_server(&t, Mode::Rotate).await?);
            results.push(against_server(&t, Mode::Me).await?);
            results.push(against_server(&t, Mode::Session).await?);
            results.push(against_server(&t, Mode::Authorize).await?);
            if t.confidential.is_some() {
                results.push(against_server(&t, Mode::Introspect).await?);
            }
            (t.load.clone(), results)
        }
    };
    if load.json {
        println!("{:#}", report_json(&load, &results));
    } else {
        print_table(&load, &results);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Workers: one virtual client each.

#[derive(Clone, Copy)]
enum Mode {
    Rotate,
    Me,
    Session,
    Authorize,
    Introspect,
}

struct Account {
    username: String,
    password: String,
}

/// One virtual client: its connection and whatever state its next request needs.
enum Worker {
    Hello {
        http: reqwest::Client,
        url: String,
    },
    Rotate {
        http: reqwest::Client,
        base: String,
        client_id: String,
        account: Account,
        /// Always the newest refresh token: a consumed one presented again revokes the session.
        refresh: String,
    },
    Me {
        http: reqwest::Client,
        url: String,
        bearer: String,
    },
    /// RFC 7662 introspection of one access token by a confidential client.
    Introspect {
        http: reqwest::Client,
        url: String,
        form: Vec<(String, String)>,
    },
    /// Cookie mode: the session check a browser's every request costs.
    Session {
        http: reqwest::Client,
        url: String,
        cookie: String,
    },
}

/// One keep-alive connection per virtual client; no proxy, plain HTTP/1.1.
fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(10))
        .build()
        .context("building the HTTP client")
}

/// A transport error with its causes ("error sending request: connection refused").
fn transport(e: reqwest::Error) -> String {
    let mut text = format!("transport: {e}");
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// The status and (truncated) body of a refused request, for the error samples.
async fn refusal(response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    format!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

/// Sends a request and returns the JSON body of a response with the expected status.
async fn expect_json(request: reqwest::RequestBuilder, status: u16) -> Result<Value, String> {
    let response = request.send().await.map_err(transport)?;
    if response.status().as_u16() != status {
        return Err(refusal(response).await);
    }
    response.json().await.map_err(transport)
}

/// The password grant; returns the token response.
async fn login(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    a: &Account,
) -> Result<Value, String> {
    let form = [
        ("grant_type", "password"),
        ("username", a.username.as_str()),
        ("password", a.password.as_str()),
        ("client_id", client_id),
    ];
    expect_json(http.post(format!("{base}/oauth/token")).form(&form), 200).await
}

fn field(body: &Value, name: &str) -> Result<String, String> {
    body[name]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("response without {name}: {body}"))
}

impl Worker {
    /// Signs up a fresh user and logs it in, ready for `mode`.
    async fn signed_in(t: &Target, mode: Mode, account: Account) -> Result<Self, String> {
        let http = http_client().map_err(|e| e.to_string())?;
        let base = t.url.trim_end_matches('/').to_string();
        let user = json!({"username": account.username, "password": account.password});
        expect_json(http.post(format!("{base}/v1/users")).json(&user), 201).await?;
        let tokens = login(&http, &base, &t.client_id, &account).await?;
        Ok(match mode {
            Mode::Rotate => Worker::Rotate {
                refresh: field(&tokens, "refresh_token")?,
                http,
                base,
                client_id: t.client_id.clone(),
                account,
            },
            Mode::Me | Mode::Authorize => Worker::Me {
                bearer: format!("Bearer {}", field(&tokens, "access_token")?),
                http,
                url: format!(
                    "{base}/{}",
                    if matches!(mode, Mode::Me) {
                        "v1/me"
                    } else {
                        "v1/authorize"
                    }
                ),
            },
            Mode::Introspect => {
                let (id, secret) = t
                    .confidential
                    .as_deref()
                    .and_then(|c| c.split_once(':'))
                    .ok_or("introspect needs --confidential id:secret")?;
                Worker::Introspect {
                    http,
                    url: format!("{base}/oauth/introspect"),
                    form: vec![
                        ("token".to_string(), field(&tokens, "access_token")?),
                        ("client_id".to_string(), id.to_string()),
                        ("client_secret".to_string(), secret.to_string()),
                    ],
                }
            }
            Mode::Session => {
                let response = http
                    .post(format!("{base}/v1/session"))
                    .json(&user)
                    .send()
                    .await
                    .map_err(transport)?;
                if response.status().as_u16() != 200 {
                    return Err(refusal(response).await);
                }
                let cookie = response
                    .headers()
                    .get("set-cookie")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.split(';').next())
                    .map(str::to_string)
                    .ok_or("cookie login without Set-Cookie")?;
                Worker::Session {
                    http,
                    url: format!("{base}/v1/session"),
                    cookie,
                }
            }
        })
    }

    /// One measured request.
    async fn step(&mut self) -> Result<(), String> {
        match self {
            Worker::Hello { http, url } => {
                let response = http.get(url.as_str()).send().await.map_err(transport)?;
                if !response.status().is_success() {
                    return Err(refusal(response).await);
                }
                response.bytes().await.map_err(transport)?;
                Ok(())
            }
            Worker::Rotate {
                http,
                base,
                client_id,
                refresh,
                ..
            } => {
                let form = [
                    ("grant_type", "refresh_token"),
                    ("refresh_token", refresh.as_str()),
                    ("client_id", client_id.as_str()),
                ];
                let request = http.post(format!("{base}/oauth/token")).form(&form);
                let tokens = expect_json(request, 200).await?;
                *refresh = field(&tokens, "refresh_token")?;
                Ok(())
            }
            Worker::Me { http, url, bearer } => {
                let response = http
                    .get(url.as_str())
                    .header("authorization", bearer.as_str())
                    .send()
                    .await
                    .map_err(transport)?;
                // /v1/me answers JSON, /v1/authorize an empty 200: read the body either way.
                if response.status().as_u16() != 200 {
                    return Err(refusal(response).await);
                }
                response.bytes().await.map_err(transport).map(drop)
            }
            Worker::Session { http, url, cookie } => {
                let request = http.get(url.as_str()).header("cookie", cookie.as_str());
                expect_json(request, 200).await.map(drop)
            }
            Worker::Introspect { http, url, form } => {
                let body = expect_json(http.post(url.as_str()).form(form), 200).await?;
                if body["active"] != true {
                    return Err(format!("token not active: {body}"));
                }
                Ok(())
            }
        }
    }

    /// After a failed request: can this worker go on? A failed or lost refresh is never
    /// retried (its token may have been consumed; presenting it again would be reuse), so a
    /// rotating worker starts a new session with the password grant instead (unmeasured).
    async fn recover(&mut self) -> bool {
        match self {
            Worker::Rotate {
                http,
                base,
                client_id,
                account,
                refresh,
            } => match login(http, base, client_id, account).await {
                Ok(tokens) => match field(&tokens, "refresh_token") {
                    Ok(newest) => {
                        *refresh = newest;
                        true
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            },
            Worker::Hello { .. }
            | Worker::Me { .. }
            | Worker::Session { .. }
            | Worker::Introspect { .. } => true,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The load loop.

/// What one worker saw in the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    errors: u64,
    samples: Vec<String>,
    /// The worker gave up (could not log in again after an error).
    stopped: bool,
}

/// One line of the report.
struct Outcome {
    mode: &'static str,
    ok: u64,
    errors: u64,
    stopped_workers: usize,
    /// From the start of the measured window until the last counted request was answered.
    elapsed: Duration,
    /// Sorted, microseconds.
    latencies_us: Vec<u32>,
    samples: Vec<String>,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let rank = (p * self.latencies_us.len() as f64).ceil() as usize;
        let index = rank.clamp(1, self.latencies_us.len()) - 1;
        f64::from(self.latencies_us[index]) / 1000.0
    }
}

/// Runs every worker back to back for warm-up + duration and merges what they saw.
async fn drive(mode: &'static str, workers: Vec<Worker>, load: &Load) -> Result<Outcome> {
    let window_start = Instant::now() + Duration::from_secs_f64(load.warmup);
    let window_end = window_start + Duration::from_secs_f64(load.duration);
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|mut worker| {
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let started = Instant::now();
                    if started >= window_end {
                        break;
                    }
                    let measured = started >= window_start;
                    let result = worker.step().await;
                    let micros = started.elapsed().as_micros();
                    match result {
                        Ok(()) if measured => tally
                            .latencies_us
                            .push(u32::try_from(micros).unwrap_or(u32::MAX)),
                        Ok(()) => {}
                        Err(e) => {
                            if measured {
                                tally.errors += 1;
                                if tally.samples.len() < ERROR_SAMPLES {
                                    tally.samples.push(e);
                                }
                            }
                            if !worker.recover().await {
                                tally.stopped = true;
                                break;
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let mut outcome = Outcome {
        mode,
        ok: 0,
        errors: 0,
        stopped_workers: 0,
        elapsed: Duration::ZERO,
        latencies_us: Vec::new(),
        samples: Vec::new(),
    };
    for task in tasks {
        let tally = task.await.context("a load worker panicked")?;
        outcome.ok += tally.latencies_us.len() as u64;
        outcome.errors += tally.errors;
        outcome.stopped_workers += usize::from(tally.stopped);
        outcome.latencies_us.extend(tally.latencies_us);
        outcome.samples.extend(tally.samples);
    }
    outcome.elapsed = Instant::now().saturating_duration_since(window_start);
    outcome.latencies_us.sort_unstable();
    outcome.samples.truncate(ERROR_SAMPLES);
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Modes.

/// A bare axum server with one route, on its own 2-thread runtime, driven like the others.
async fn baseline(load: &Load) -> Result<Outcome> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the baseline")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the baseline runtime")?;
    runtime.spawn(async move {
        let app = axum::Router::new().route("/hello", axum::routing::get(|| async { "hello" }));
        match tokio::net::TcpListener::from_std(listener) {
            Ok(listener) => {
                if let Err(e) = axum::serve(listener, app).await {
                    eprintln!("baseline server: {e}");
                }
            }
            Err(e) => eprintln!("baseline listener: {e}"),
        }
    });
    let url = format!("http://{addr}/hello");
    let workers = (0..load.concurrency)
        .map(|_| {
            Ok(Worker::Hello {
                http: http_client()?,
                url: url.clone(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let outcome = drive("baseline", workers, load).await;
    // Dropping a runtime inside another one would panic; this one just stops.
    runtime.shutdown_background();
    outcome
}

/// A random hex tag so usernames from different runs never collide.
fn run_tag() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

/// Signs up and logs in `concurrency` users (unmeasured), then runs `mode` against the server.
async fn against_server(t: &Target, mode: Mode) -> Result<Outcome> {
    let tag = run_tag();
    let urls: Vec<&str> = t
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    if urls.is_empty() {
        bail!("--url names no server");
    }
    let setups = (0..t.load.concurrency).map(|n| {
        let account = Account {
            username: format!("{}-{tag}-{n}", t.user_prefix),
            password: format!("{}-{tag}-{n}", t.password_prefix),
        };
        let mut t = t.clone();
        t.url = urls[n % urls.len()].to_string();
        tokio::spawn(async move { Worker::signed_in(&t, mode, account).await })
    });
    let mut workers = Vec::new();
    for setup in setups.collect::<Vec<_>>() {
        match setup.await.context("a setup task panicked")? {
            Ok(worker) => workers.push(worker),
            Err(e) => bail!(
                "signing up and logging in a benchmark user at {}: {e}",
                t.url
            ),
        }
    }
    let name = match mode {
        Mode::Rotate => "rotations",
        Mode::Me => "me",
        Mode::Session => "session",
        Mode::Authorize => "authorize",
        Mode::Introspect => "introspect",
    };
    drive(name, workers, &t.load).await
}

// ---------------------------------------------------------------------------------------------
// Reporting.

fn baseline_rate(results: &[Outcome]) -> Option<f64> {
    results
        .iter()
        .find(|o| o.mode == "baseline")
        .map(Outcome::rate)
}

fn print_table(load: &Load, results: &[Outcome]) {
    let base = baseline_rate(results);
    println!(
        "concurrency {}, {} s measured per mode after {} s warm-up",
        load.concurrency, load.duration, load.warmup
    );
    println!(
        "{:<10} {:>12} {:>9} {:>9} {:>8} {:>12}",
        "mode", "requests/s", "p50 ms", "p99 ms", "errors", "vs baseline"
    );
    for o in results {
        let ratio = base.map_or("-".to_string(), |b| {
            format!("{:.1} %", 100.0 * o.rate() / b)
        });
        println!(
            "{:<10} {:>12.0} {:>9.2} {:>9.2} {:>8} {:>12}",
            o.mode,
            o.rate(),
            o.percentile_ms(0.50),
            o.percentile_ms(0.99),
            o.errors,
            ratio
        );
    }
    for o in results {
        if o.stopped_workers > 0 {
            println!(
                "{}: {} workers stopped (could not log in again)",
                o.mode, o.stopped_workers
            );
        }
        for sample in &o.samples {
            println!("{} error: {sample}", o.mode);
        }
    }
}

fn report_json(load: &Load, results: &[Outcome]) -> Value {
    let base = baseline_rate(results);
    let modes: Vec<Value> = results
        .iter()
        .map(|o| {
            json!({
                "mode": o.mode,
                "requests": o.ok,
                "errors": o.errors,
                "stopped_workers": o.stopped_workers,
                "elapsed_secs": o.elapsed.as_secs_f64(),
                "requests_per_sec": o.rate(),
                "p50_ms": o.percentile_ms(0.50),
                "p99_ms": o.percentile_ms(0.99),
                "ratio_to_baseline": base.map(|b| o.rate() / b),
                "error_samples": o.samples,
            })
        })
        .collect();
    json!({
        "concurrency": load.concurrency,
        "duration_secs": load.duration,
        "warmup_secs": load.warmup,
        "results": modes,
    })
}
