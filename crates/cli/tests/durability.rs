//! Durability and log hygiene of the real binary: `latchkey serve` on SQLite is killed with
//! SIGKILL in the middle of a load of logins, refreshes and revocations, then restarted on the
//! same file. Every acknowledged refresh token must still work (the grace window covers a
//! rotation whose response was lost in the kill), every acknowledged revocation must still
//! hold, and nothing the run issued may appear in the server's logs (at TRACE level).
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "durability password 123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn spawn(dir: &Path, log_name: &str) -> Child {
    let log = std::fs::File::create(dir.join(log_name)).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["serve", "--config"])
        .arg(dir.join("latchkey.toml"))
        .current_dir(dir)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start latchkey serve")
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("latchkey did not become ready");
}

async fn form(
    http: &reqwest::Client,
    url: String,
    params: &[(&str, &str)],
) -> Result<(u16, Value), reqwest::Error> {
    let r = http.post(url).form(params).send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// A config for `latchkey serve` on a SQLite file in `dir`, with cheap Argon2, no throttles and
/// the given refresh grace window (`"0s"`: strict reuse detection).
fn write_config(dir: &Path, port: u16, reuse_interval: &str) {
    std::fs::write(
        dir.join("latchkey.toml"),
        format!(
            r#"listen = "127.0.0.1:{port}"
database = "sqlite://{db}"
[refresh]
reuse_interval = "{reuse_interval}"
[password]
argon2_memory_kib = 64
argon2_iterations = 1
[rate_limit]
login_per_account = "off"
login_per_ip = "off"
token_per_ip = "off"
[[clients]]
id = "spa"
kind = "public"
audience = "api"
scopes = ["read"]
"#,
            db = dir.join("latchkey.db").display()
        ),
    )
    .expect("config");
}

async fn refresh(
    http: &reqwest::Client,
    base: &str,
    rt: &str,
) -> Result<(u16, Value), reqwest::Error> {
    form(
        http,
        format!("{base}/oauth/token"),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", rt),
            ("client_id", "spa"),
        ],
    )
    .await
}

/// What the load saw acknowledged, per worker.
#[derive(Default, Clone)]
struct Acked {
    /// The newest refresh token a 200 response handed out, per live session.
    refresh: Vec<String>,
    /// Refresh tokens whose session a 200 from /oauth/revoke ended.
    revoked: Vec<String>,
    /// Every token the run saw, for the log scan.
    seen: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_kill_9_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    write_config(dir.path(), port, "60s");
    let mut server = spawn(dir.path(), "first.log");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    wait_ready(&http, &base).await;
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "durable", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);

    // Load: 6 workers log in, rotate, and every few rounds revoke their session and log in anew.
    let acked = Arc::new(Mutex::new(Acked::default()));
    // Set just before the kill: a transport error before it is a hiccup (retried: a refresh
    // repeat is covered by the grace window, a revoke repeat is idempotent), after it the end.
    let killing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (http, base, acked, killing) =
            (http.clone(), base.clone(), acked.clone(), killing.clone());
        workers.push(tokio::spawn(async move {
            let login = [
                ("grant_type", "password"),
                ("username", "durable"),
                ("password", PASSWORD),
                ("client_id", "spa"),
            ];
            let mut current: Option<String> = None;
            for round in 0u32.. {
                let result = match &current {
                    None => form(&http, format!("{base}/oauth/token"), &login).await,
                    Some(rt) if round % 7 == (w % 7) => {
                        let rt = rt.clone();
                        match form(
                            &http,
                            format!("{base}/oauth/revoke"),
                            &[("token", &rt), ("client_id", "spa")],
                        )
                        .await
                        {
                            Ok((200, _)) => {
                                let mut a = acked.lock().expect("lock");
                                a.refresh.retain(|t| *t != rt);
                                a.revoked.push(rt);
                                current = None;
                                continue;
                            }
                            // Cut off by the kill: the revocation may or may not have
                            // committed, so this session is neither acknowledged live nor
                            // acknowledged revoked.
                            Err(_) if killing.load(std::sync::atomic::Ordering::SeqCst) => {
                                acked.lock().expect("lock").refresh.retain(|t| *t != rt);
                                return;
                            }
                            Err(_) => continue,
                            other => other,
                        }
                    }
                    Some(rt) => {
                        form(
                            &http,
                            format!("{base}/oauth/token"),
                            &[
                                ("grant_type", "refresh_token"),
                                ("refresh_token", rt),
                                ("client_id", "spa"),
                            ],
                        )
                        .await
                    }
                };
                match result {
                    Ok((200, body)) => {
                        let new = body["refresh_token"].as_str().expect("refresh").to_string();
                        let access = body["access_token"].as_str().expect("access").to_string();
                        let mut a = acked.lock().expect("lock");
                        if let Some(old) = &current {
                            a.refresh.retain(|t| t != old);
                        }
                        a.refresh.push(new.clone());
                        a.seen.extend([new.clone(), access]);
                        current = Some(new);
                    }
                    Ok((status, body)) => {
                        panic!("worker {w}: unexpected {status} {body} before the kill")
                    }
                    // The server is gone: stop here; what was acknowledged is recorded.
                    Err(_) if killing.load(std::sync::atomic::Ordering::SeqCst) => return,
                    Err(_) => continue,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    killing.store(true, std::sync::atomic::Ordering::SeqCst);
    server.kill().expect("SIGKILL"); // std's kill() is SIGKILL on Unix
    server.wait().expect("reap");
    for w in workers {
        w.await.expect("worker");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(
        !acked.refresh.is_empty() && !acked.revoked.is_empty(),
        "too little load before the kill: {} live families, {} revoked, {} tokens seen",
        acked.refresh.len(),
        acked.revoked.len(),
        acked.seen.len()
    );

    let mut server = spawn(dir.path(), "second.log");
    wait_ready(&http, &base).await;
    for rt in &acked.refresh {
        let (status, body) = form(
            &http,
            format!("{base}/oauth/token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "spa"),
            ],
        )
        .await
        .expect("request");
        assert_eq!(
            status, 200,
            "an acknowledged refresh token was lost in the crash: {body}"
        );
    }
    for rt in &acked.revoked {
        let (status, body) = form(
            &http,
            format!("{base}/oauth/token"),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("client_id", "spa"),
            ],
        )
        .await
        .expect("request");
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "an acknowledged revocation was lost"
        );
    }
    server.kill().expect("stop");
    server.wait().expect("reap");

    let mut logs = String::new();
    for name in ["first.log", "second.log"] {
        logs.push_str(&std::fs::read_to_string(dir.path().join(name)).expect("log"));
    }
    assert!(logs.contains("latchkey is serving"), "no logs captured");
    for secret in acked
        .seen
        .iter()
        .chain(&acked.revoked)
        .map(String::as_str)
        .chain([PASSWORD])
    {
        assert!(
            !logs.contains(secret),
            "a secret reached the logs: {}…",
            &secret[..8]
        );
    }
}

/// Strict mode (no grace window): a reuse the server answered ("reuse detected", the family
/// revoked) must survive a kill -9 right after, during a load of logins, rotations and
/// reuses: on restart the family's newest token and the reused one are both refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reuse_detection_survives_kill_9_in_strict_mode() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    write_config(dir.path(), port, "0s");
    let mut server = spawn(dir.path(), "first.log");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    wait_ready(&http, &base).await;
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": "strict", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);

    // (the family's newest token, the reused token) for every reuse the server answered.
    let detected: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let killing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..6 {
        let (http, base, detected, killing) = (
            http.clone(),
            base.clone(),
            detected.clone(),
            killing.clone(),
        );
        workers.push(tokio::spawn(async move {
            let login = [
                ("grant_type", "password"),
                ("username", "strict"),
                ("password", PASSWORD),
                ("client_id", "spa"),
            ];
            // One family per cycle: log in, rotate twice, present the first token again. A
            // transport error drops the family (in strict mode a retried refresh whose first
            // attempt committed would itself be a reuse), and ends the worker once killing.
            'cycle: loop {
                let mut tokens = Vec::new();
                match form(&http, format!("{base}/oauth/token"), &login).await {
                    Ok((200, body)) => {
                        tokens.push(body["refresh_token"].as_str().expect("rt").to_string())
                    }
                    Ok((status, body)) => {
                        panic!("worker {w}: login {status} {body} before the kill")
                    }
                    Err(_) if killing.load(std::sync::atomic::Ordering::SeqCst) => return,
                    Err(_) => continue,
                }
                for _ in 0..2 {
                    let current = tokens.last().expect("token").clone();
                    match refresh(&http, &base, &current).await {
                        Ok((200, body)) => {
                            tokens.push(body["refresh_token"].as_str().expect("rt").to_string())
                        }
                        Ok((status, body)) => {
                            panic!("worker {w}: refresh {status} {body} before the kill")
                        }
                        Err(_) if killing.load(std::sync::atomic::Ordering::SeqCst) => return,
                        Err(_) => continue 'cycle,
                    }
                }
                match refresh(&http, &base, &tokens[0]).await {
                    Ok((400, body)) => {
                        let description = body["error_description"].as_str().unwrap_or_default();
                        assert!(description.contains("reuse"), "worker {w}: {body}");
                        let newest = tokens.last().expect("token").clone();
                        detected
                            .lock()
                            .expect("lock")
                            .push((newest, tokens[0].clone()));
                    }
                    Ok((status, body)) => panic!("worker {w}: reuse answered {status} {body}"),
                    Err(_) if killing.load(std::sync::atomic::Ordering::SeqCst) => return,
                    Err(_) => continue,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    killing.store(true, std::sync::atomic::Ordering::SeqCst);
    server.kill().expect("SIGKILL");
    server.wait().expect("reap");
    for w in workers {
        w.await.expect("worker");
    }
    let detected = detected.lock().expect("lock").clone();
    assert!(
        !detected.is_empty(),
        "no reuse was answered before the kill"
    );

    let mut server = spawn(dir.path(), "second.log");
    wait_ready(&http, &base).await;
    for (newest, reused) in &detected {
        for token in [newest, reused] {
            let (status, body) = refresh(&http, &base, token).await.expect("request");
            assert_eq!(
                (status, body["error"].as_str()),
                (400, Some("invalid_grant")),
                "a family revoked for reuse came back after the crash: {body}"
            );
        }
    }
    server.kill().expect("stop");
    server.wait().expect("reap");
}
