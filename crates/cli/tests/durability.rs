//! Durability and log hygiene of the real binary: `latchkey serve` on SQLite is killed with
//! SIGKILL in the middle of a load of logins, refreshes and revocations, then restarted on the
//! same file. Every acknowledged refresh token must still work (the grace window covers a
//! rotation whose response was lost in the kill), every acknowledged revocation must still
//! hold, and nothing the run issued may appear in the server's logs (at TRACE level).
//!
//! The log scan also covers every way a secret arrives in a header: after the restart, each
//! step with a status it must have (so a failing step cannot silently shrink the scan), a
//! Bearer access token, the session cookie with its CSRF token, the admin token, a confidential
//! client's secret over HTTP Basic and in the form, the feed token, and wrong guesses of each.
use serde_json::{Value, json};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PASSWORD: &str = "durability password 123";
const NEW_PASSWORD: &str = "durability new password 456";
const ADMIN_TOKEN: &str = "admin-token-durability-log-scan-0001";
const FEED_TOKEN: &str = "feed-token-durability-log-scan-0002";
const CLIENT_SECRET: &str = "client-secret-durability-log-scan-0003";
const WRONG: [&str; 3] = [
    "wrong-admin-guess-durability-0004",
    "wrong-client-secret-durability-0005",
    "wrong-feed-guess-durability-0006",
];

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
admin_token = "{ADMIN_TOKEN}"
feed_token = "{FEED_TOKEN}"
[log]
level = "trace"
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
grant_types = ["password", "refresh_token"]
[[clients]]
id = "backend"
kind = "confidential"
secret = "{CLIENT_SECRET}"
audience = "internal"
scopes = ["read"]
grant_types = ["password", "refresh_token"]
"#,
            db = dir.join("latchkey.db").display()
        ),
    )
    .expect("config");
}

/// A server of this test's own on a fresh SQLite file, ready, with one user signed up.
struct Started {
    dir: tempfile::TempDir,
    base: String,
    server: Child,
    http: reqwest::Client,
}

async fn start(username: &str, reuse_interval: &str) -> Started {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    write_config(dir.path(), port, reuse_interval);
    let server = spawn(dir.path(), "first.log");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    wait_ready(&http, &base).await;
    let r = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"username": username, "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);
    Started {
        dir,
        base,
        server,
        http,
    }
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
    let Started {
        dir,
        base,
        mut server,
        http,
    } = start("durable", "60s").await;

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
    let header_secrets = secrets_in_headers(&http, &base).await;
    server.kill().expect("stop");
    server.wait().expect("reap");

    let mut logs = String::new();
    for name in ["first.log", "second.log"] {
        logs.push_str(&std::fs::read_to_string(dir.path().join(name)).expect("log"));
    }
    assert!(logs.contains("latchkey is serving"), "no logs captured");
    assert!(logs.contains("TRACE"), "the server did not log at TRACE");
    for secret in acked
        .seen
        .iter()
        .chain(&acked.revoked)
        .chain(&header_secrets)
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
    let Started {
        dir,
        base,
        mut server,
        http,
    } = start("strict", "0s").await;

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

/// Sends every secret a header can carry to the running server, asserting each step's status,
/// and returns every secret sent or received (and their encodings as sent) for the log scan.
async fn secrets_in_headers(http: &reqwest::Client, base: &str) -> Vec<String> {
    let mut secrets: Vec<String> = [ADMIN_TOKEN, FEED_TOKEN, CLIENT_SECRET, NEW_PASSWORD]
        .into_iter()
        .chain(WRONG)
        .map(String::from)
        .collect();
    let step = |what: &'static str, expected: u16, request: reqwest::RequestBuilder| async move {
        let r = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().to_string());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{what}: {body}");
        (body, cookie)
    };
    let user = "header-scan";
    step(
        "sign-up",
        201,
        http.post(format!("{base}/v1/users"))
            .json(&json!({"username": user, "password": PASSWORD})),
    )
    .await;
    let (bystander, _) = step(
        "sign-up of a user to ban",
        201,
        http.post(format!("{base}/v1/users"))
            .json(&json!({"username": "header-scan-banned", "password": PASSWORD})),
    )
    .await;
    let bystander = bystander["id"].as_str().expect("id").to_string();

    // Token mode: a Bearer access token.
    let (tokens, _) = step(
        "password grant",
        200,
        http.post(format!("{base}/oauth/token")).form(&[
            ("grant_type", "password"),
            ("username", user),
            ("password", PASSWORD),
            ("client_id", "spa"),
        ]),
    )
    .await;
    let access = tokens["access_token"].as_str().expect("access").to_string();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_string();
    step(
        "GET /v1/me with Bearer",
        200,
        http.get(format!("{base}/v1/me")).bearer_auth(&access),
    )
    .await;
    step(
        "forward auth with Bearer",
        200,
        http.get(format!("{base}/v1/authorize"))
            .bearer_auth(&access),
    )
    .await;

    // A confidential client: HTTP Basic, then the form; a wrong secret each way.
    let basic = base64_encode(&format!("backend:{CLIENT_SECRET}"));
    let wrong_basic = base64_encode(&format!("backend:{}", WRONG[1]));
    let (active, _) = step(
        "introspection with Basic client credentials",
        200,
        http.post(format!("{base}/oauth/introspect"))
            .header("authorization", format!("Basic {basic}"))
            .form(&[("token", access.as_str())]),
    )
    .await;
    assert_eq!(active["active"], true, "{active}");
    step(
        "introspection with client_secret_post",
        200,
        http.post(format!("{base}/oauth/introspect")).form(&[
            ("token", refresh.as_str()),
            ("client_id", "backend"),
            ("client_secret", CLIENT_SECRET),
        ]),
    )
    .await;
    step(
        "introspection with a wrong Basic secret",
        401,
        http.post(format!("{base}/oauth/introspect"))
            .header("authorization", format!("Basic {wrong_basic}"))
            .form(&[("token", access.as_str())]),
    )
    .await;
    step(
        "introspection with a wrong client_secret_post",
        401,
        http.post(format!("{base}/oauth/introspect")).form(&[
            ("token", access.as_str()),
            ("client_id", "backend"),
            ("client_secret", WRONG[1]),
        ]),
    )
    .await;
    secrets.extend([basic, wrong_basic]);

    // The admin token, right and wrong.
    step(
        "introspection with the admin token",
        200,
        http.post(format!("{base}/oauth/introspect"))
            .bearer_auth(ADMIN_TOKEN)
            .form(&[("token", access.as_str())]),
    )
    .await;
    step(
        "admin ban",
        204,
        http.post(format!("{base}/admin/v1/users/{bystander}/ban"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    step(
        "admin key rotation",
        200,
        http.post(format!("{base}/admin/v1/keys/rotate"))
            .bearer_auth(ADMIN_TOKEN),
    )
    .await;
    step(
        "admin call with a wrong token",
        401,
        http.post(format!("{base}/admin/v1/keys/rotate"))
            .bearer_auth(WRONG[0]),
    )
    .await;

    // The feed token, right and wrong.
    step(
        "feed with its token",
        200,
        http.get(format!("{base}/v1/revocations"))
            .bearer_auth(FEED_TOKEN),
    )
    .await;
    step(
        "feed with a wrong token",
        401,
        http.get(format!("{base}/v1/revocations"))
            .bearer_auth(WRONG[2]),
    )
    .await;

    // Cookie mode: the cookie and the CSRF token on every kind of request.
    let (login, cookie) = step(
        "cookie login",
        200,
        http.post(format!("{base}/v1/session"))
            .json(&json!({"username": user, "password": PASSWORD})),
    )
    .await;
    let cookie = cookie.expect("Set-Cookie");
    let csrf = login["csrf_token"]
        .as_str()
        .expect("csrf_token")
        .to_string();
    step(
        "GET /v1/session with the cookie",
        200,
        http.get(format!("{base}/v1/session"))
            .header("cookie", &cookie),
    )
    .await;
    step(
        "GET /v1/sessions with the cookie",
        200,
        http.get(format!("{base}/v1/sessions"))
            .header("cookie", &cookie),
    )
    .await;
    step(
        "a state change with the cookie but no CSRF token",
        403,
        http.post(format!("{base}/v1/sessions/revoke-others"))
            .header("cookie", &cookie),
    )
    .await;
    step(
        "password change with the cookie and the CSRF token",
        204,
        http.post(format!("{base}/v1/password"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
    )
    .await;
    step(
        "the Bearer of a session the password change revoked",
        401,
        http.get(format!("{base}/v1/me")).bearer_auth(&access),
    )
    .await;
    step(
        "logout with the cookie and the CSRF token",
        204,
        http.delete(format!("{base}/v1/session"))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf),
    )
    .await;
    step(
        "the logged-out cookie",
        401,
        http.get(format!("{base}/v1/session"))
            .header("cookie", &cookie),
    )
    .await;

    let cookie_secret = cookie.split_once('=').expect("name=value").1.to_string();
    let signature = access.rsplit('.').next().expect("signature").to_string();
    secrets.extend([access, refresh, signature, cookie_secret, csrf]);
    secrets
}

/// Standard base64 with padding, as HTTP Basic sends it.
fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
