//! Over a real socket against SQLite: concurrent refreshes of one token, the way clients
//! actually race; and the connection limits of `[server]` (timeouts, caps), which only a real
//! socket through the real accept loop can show.
use crate::harness::*;
use latchkey_server::{AppState, app};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Running {
    pub base: String,
    pub state: AppState,
    _dir: tempfile::TempDir,
}

pub async fn start(config: latchkey_server::Config) -> Running {
    start_until(config, std::future::pending()).await.0
}

/// A server that stops (draining as `latchkey serve` does) when `shutdown` completes; the
/// handle finishes when the accept loop has returned.
pub async fn start_until(
    config: latchkey_server::Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> (Running, tokio::task::JoinHandle<std::io::Result<()>>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("socket.db").display());
    let store = Arc::new(
        latchkey_store::SqliteStore::connect(&url)
            .await
            .expect("SQLite"),
    );
    let state = AppState::new(config, store, Arc::new(latchkey_core::SystemClock))
        .await
        .expect("state");
    latchkey_server::spawn_background_tasks(&state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    // The accept loop `latchkey serve` runs, with its limits.
    let serving = state.clone();
    let handle = tokio::spawn(async move {
        latchkey_server::serve::run(listener, app(serving.clone()), &serving, shutdown).await
    });
    (
        Running {
            base,
            state,
            _dir: dir,
        },
        handle,
    )
}

async fn post_form(
    client: &reqwest::Client,
    url: &str,
    params: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let r = client.post(url).form(params).send().await.expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.expect("JSON body"))
}

async fn login(client: &reqwest::Client, base: &str) -> String {
    let r = client
        .post(format!("{base}/v1/users"))
        .json(&serde_json::json!({"username": "racer", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);
    let (status, body) = post_form(
        client,
        &format!("{base}/oauth/token"),
        &[
            ("grant_type", "password"),
            ("username", "racer"),
            ("password", PASSWORD),
            ("client_id", "spa"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["refresh_token"].as_str().expect("refresh").to_string()
}

async fn race(
    base: &str,
    client: &reqwest::Client,
    token: &str,
    n: usize,
) -> Vec<(u16, serde_json::Value)> {
    let url = format!("{base}/oauth/token");
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, token, barrier) = (
                client.clone(),
                url.clone(),
                token.to_string(),
                barrier.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                post_form(
                    &client,
                    &url,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &token),
                        ("client_id", "spa"),
                    ],
                )
                .await
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("task"));
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_have_one_winner_then_reuse_kills_the_family() {
    let server = start(test_config()).await;
    let client = reqwest::Client::new();
    let token = login(&client, &server.base).await;
    let results = race(&server.base, &client, &token, 20).await;
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*status, 400, "{body}");
        assert_eq!(body["error"], "invalid_grant");
    }
    // Strict mode: the concurrent repeats were reuse, so the winner's successor is dead too.
    let successor = winners[0].1["refresh_token"].as_str().expect("refresh");
    let (status, body) = post_form(
        &client,
        &format!("{}/oauth/token", server.base),
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", successor),
            ("client_id", "spa"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_a_grace_window_concurrent_refreshes_all_get_the_one_successor() {
    let mut config = test_config();
    config.refresh.reuse_interval =
        latchkey_server::config::Ttl(std::time::Duration::from_secs(30));
    let server = start(config).await;
    let client = reqwest::Client::new();
    let token = login(&client, &server.base).await;
    let results = race(&server.base, &client, &token, 20).await;
    let successors: std::collections::HashSet<&str> = results
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["refresh_token"].as_str().expect("refresh")
        })
        .collect();
    assert_eq!(successors.len(), 1, "exactly one successor for the family");
}

/// Reads SSE events (`id`, `data`) from a streaming response until `n` arrived or `timeout`.
pub async fn read_events(
    response: &mut reqwest::Response,
    n: usize,
    timeout: std::time::Duration,
) -> Vec<(i64, serde_json::Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while events.len() < n {
        let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
            Ok(Ok(Some(chunk))) => chunk,
            _ => break,
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let (mut id, mut data, mut kind) = (None, None, None);
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id:") {
                    id = v.trim().parse::<i64>().ok();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str::<serde_json::Value>(v.trim()).ok();
                } else if let Some(v) = line.strip_prefix("event:") {
                    kind = Some(v.trim().to_string());
                }
            }
            if let (Some(id), Some(data)) = (id, data) {
                assert_eq!(kind.as_deref(), Some("revoked"));
                events.push((id, data));
            }
        }
    }
    events
}

pub async fn login_sid(client: &reqwest::Client, base: &str, username: &str) -> (String, String) {
    let (status, body) = post_form(
        client,
        &format!("{base}/oauth/token"),
        &[
            ("grant_type", "password"),
            ("username", username),
            ("password", PASSWORD),
            ("client_id", "spa"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let refresh = body["refresh_token"].as_str().expect("refresh").to_string();
    let sid = jwt_part(body["access_token"].as_str().expect("access"), 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    (refresh, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sse_feed_pushes_revocations_and_resumes_without_loss() {
    let server = start(test_config()).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/users", server.base))
        .json(&serde_json::json!({"username": "sse", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);
    let sessions: Vec<(String, String)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(login_sid(&client, &server.base, "sse").await);
        }
        v
    };
    let revoke = |refresh: String| {
        let (client, url) = (client.clone(), format!("{}/oauth/revoke", server.base));
        async move {
            let r = client
                .post(url)
                .form(&[("token", refresh.as_str()), ("client_id", "spa")])
                .send()
                .await
                .expect("revoke");
            assert_eq!(r.status(), 200);
        }
    };

    let mut stream = client
        .get(format!("{}/v1/revocations", server.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    assert!(
        stream.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    let started = std::time::Instant::now();
    revoke(sessions[0].0.clone()).await;
    let first = read_events(&mut stream, 1, std::time::Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1, "no event pushed");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "pushed after {:?}",
        started.elapsed()
    );
    assert_eq!(first[0].1["sid"], sessions[0].1.as_str());
    assert!(first[0].1["exp"].as_i64().is_some());
    drop(stream);

    // While disconnected, two more revocations happen.
    revoke(sessions[1].0.clone()).await;
    revoke(sessions[2].0.clone()).await;
    let mut resumed = client
        .get(format!("{}/v1/revocations", server.base))
        .header("accept", "text/event-stream")
        .header("last-event-id", first[0].0.to_string())
        .send()
        .await
        .expect("resume");
    let missed = read_events(&mut resumed, 3, std::time::Duration::from_secs(2)).await;
    let got: Vec<&str> = missed
        .iter()
        .map(|(_, d)| d["sid"].as_str().expect("sid"))
        .collect();
    assert_eq!(
        got,
        vec![sessions[1].1.as_str(), sessions[2].1.as_str()],
        "exactly the missed events, in order"
    );
    assert!(missed[0].0 > first[0].0 && missed[1].0 > missed[0].0);
}

// ---- Connection limits (`[server]`) over real sockets ----

fn limited(header: u64, idle: u64, body: u64) -> latchkey_server::Config {
    let mut config = test_config();
    config.server.header_read_timeout = latchkey_server::config::Ttl(Duration::from_millis(header));
    config.server.keep_alive_idle = latchkey_server::config::Ttl(Duration::from_millis(idle));
    config.server.body_read_timeout = latchkey_server::config::Ttl(Duration::from_millis(body));
    config
}

fn addr_of(running: &Running) -> std::net::SocketAddr {
    running
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("socket address")
}

/// A connection from a chosen loopback address (127.0.0.0/8 all reach the listener).
async fn connect_from(running: &Running, local: [u8; 4]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((local, 0)))
        .expect("bind local address");
    socket.connect(addr_of(running)).await.expect("connect")
}

/// Reads until the peer closes (`true`) or `within` passes (`false`), returning what came.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&seen).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&seen).into_owned(), true),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one response with a `Content-Length` body (enough for the API's answers).
async fn read_response(stream: &mut TcpStream) -> String {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&seen).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a whole response: {text:?}");
        seen.extend_from_slice(&buf[..n]);
    }
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: latchkey\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_byte_by_byte_is_cut_off_at_the_header_timeout() {
    let server = start(limited(1_000, 60_000, 60_000)).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    let started = Instant::now();
    let request = b"GET /healthz HTTP/1.1\r\nhost: latchkey\r\nx-padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut closed_after = None;
    for byte in request.iter() {
        if stream.write_all(&[*byte]).await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed_after = Some(started.elapsed());
                break;
            }
            Ok(Ok(n)) => panic!(
                "answered a slowloris header: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
        }
    }
    let closed_after = closed_after.expect("the connection stayed open for the whole header");
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(2_500),
        "closed after {closed_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_closed_at_the_header_timeout() {
    let server = start(limited(800, 60_000, 60_000)).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    let started = Instant::now();
    let (seen, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "still open after 5 s");
    assert_eq!(seen, "", "a silent connection gets no answer");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_lives_for_keep_alive_idle_not_the_header_timeout() {
    // Header timeout 500 ms, idle 2 s: a connection idle for longer than the header timeout
    // between requests is still served, and closed once idle for 2 s.
    let server = start(limited(500, 2_000, 60_000)).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    stream.write_all(HEALTHZ).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    stream.write_all(HEALTHZ).await.expect("write");
    assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
    let idle_from = Instant::now();
    let (seen, closed) = read_to_close(&mut stream, Duration::from_secs(6)).await;
    assert!(closed && seen.is_empty(), "{seen:?}");
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(1_800) && idle < Duration::from_millis(3_500),
        "closed after {idle:?} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_gets_408_and_the_connection_is_closed() {
    let server = start(limited(10_000, 60_000, 1_000)).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    let started = Instant::now();
    stream
        .write_all(
            b"POST /v1/users HTTP/1.1\r\nhost: latchkey\r\ncontent-type: application/json\r\ncontent-length: 60000\r\n\r\n{\"username\":",
        )
        .await
        .expect("write");
    let (seen, closed) = read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert!(closed, "the connection stayed open: {seen:?}");
    assert!(seen.starts_with("HTTP/1.1 408"), "{seen:?}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(3_000),
        "{elapsed:?}"
    );
    let body = &seen[seen.find("\r\n\r\n").expect("head") + 4..];
    let body: serde_json::Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(body["error"], "request_timeout");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| !d.is_empty())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_feed_outlives_every_timeout() {
    // Every timeout short; the stream is a request in progress, not an idle connection.
    let server = start(limited(300, 300, 300)).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/users", server.base))
        .json(&serde_json::json!({"username": "long-sse", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    assert_eq!(r.status(), 201);
    let (refresh, sid) = login_sid(&client, &server.base, "long-sse").await;
    let mut stream = client
        .get(format!("{}/v1/revocations", server.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let r = client
        .post(format!("{}/oauth/revoke", server.base))
        .form(&[("token", refresh.as_str()), ("client_id", "spa")])
        .send()
        .await
        .expect("revoke");
    assert_eq!(r.status(), 200);
    let events = read_events(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "the stream was cut");
    assert_eq!(events[0].1["sid"], sid.as_str());
}

fn refused(reason: &str) -> f64 {
    let text = latchkey_server::metrics::handle().render();
    text.lines()
        .filter(|l| {
            l.starts_with("latchkey_connections_refused_total")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_close_extra_connections_at_once() {
    let mut config = limited(30_000, 60_000, 60_000);
    config.server.max_connections = 5;
    config.server.max_connections_per_ip = 3;
    let server = start(config).await;
    let (per_ip_before, global_before) = (
        refused("max_connections_per_ip"),
        refused("max_connections"),
    );

    // Three from one address are kept (silent: they would wait for the header timeout).
    let mut from_a = Vec::new();
    for _ in 0..3 {
        from_a.push(connect_from(&server, [127, 0, 0, 11]).await);
    }
    // The fourth from that address is closed at once.
    let mut fourth = connect_from(&server, [127, 0, 0, 11]).await;
    let (seen, closed) = read_to_close(&mut fourth, Duration::from_secs(2)).await;
    assert!(
        closed && seen.is_empty(),
        "per-address cap not enforced: {seen:?}"
    );
    // Another address still gets in, up to the global cap of 5 ...
    let mut from_b = Vec::new();
    for _ in 0..2 {
        let mut s = connect_from(&server, [127, 0, 0, 12]).await;
        s.write_all(HEALTHZ).await.expect("write");
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        from_b.push(s);
    }
    // ... and not beyond it, whatever the address.
    let mut sixth = connect_from(&server, [127, 0, 0, 13]).await;
    let (seen, closed) = read_to_close(&mut sixth, Duration::from_secs(2)).await;
    assert!(
        closed && seen.is_empty(),
        "global cap not enforced: {seen:?}"
    );
    // The kept connections still work.
    from_a[0].write_all(HEALTHZ).await.expect("write");
    assert!(
        read_response(&mut from_a[0])
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(refused("max_connections_per_ip") >= per_ip_before + 1.0);
    assert!(refused("max_connections") >= global_before + 1.0);

    // Closing connections gives their places back.
    drop(from_a);
    let mut ok = false;
    for _ in 0..50 {
        let mut s = connect_from(&server, [127, 0, 0, 11]).await;
        if s.write_all(HEALTHZ).await.is_ok() {
            let (seen, _) = read_to_close(&mut s, Duration::from_millis(300)).await;
            if seen.starts_with("HTTP/1.1 200") {
                ok = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "places were not given back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_megabyte_header_block_is_refused() {
    let server = start(test_config()).await;
    let mut stream = connect_from(&server, [127, 0, 0, 1]).await;
    let mut request = b"GET /healthz HTTP/1.1\r\nhost: latchkey\r\n".to_vec();
    for i in 0..1024 {
        request.extend_from_slice(format!("x-filler-{i}: ").as_bytes());
        request.extend_from_slice(&[b'a'; 1000]);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"\r\n");
    assert!(request.len() > 1_000_000);
    let (mut reader, mut writer) = stream.split();
    // The server may stop reading (and close) long before the whole block is written.
    let write = async {
        let _ = writer.write_all(&request).await;
    };
    let read = async {
        let mut seen = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut seen)).await;
        String::from_utf8_lossy(&seen).into_owned()
    };
    let ((), seen) = tokio::join!(write, read);
    assert!(
        seen.is_empty() || seen.starts_with("HTTP/1.1 431"),
        "a 1 MB header block was not refused: {}",
        &seen[..seen.len().min(200)]
    );
    assert!(!seen.contains(" 200 "), "{seen:?}");
    // The server carries on.
    let mut next = connect_from(&server, [127, 0, 0, 1]).await;
    next.write_all(HEALTHZ).await.expect("write");
    assert!(read_response(&mut next).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_finishes_requests_and_stops_within_the_grace() {
    let mut config = test_config();
    config.shutdown_grace = latchkey_server::config::Ttl(Duration::from_secs(2));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (server, handle) = start_until(config, async {
        let _ = stop_rx.await;
    })
    .await;
    let mut idle = connect_from(&server, [127, 0, 0, 1]).await;
    idle.write_all(HEALTHZ).await.expect("write");
    assert!(read_response(&mut idle).await.starts_with("HTTP/1.1 200"));
    // An SSE stream never finishes by itself: the grace bounds it.
    let client = reqwest::Client::new();
    let stream = client
        .get(format!("{}/v1/revocations", server.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    let stopped_at = Instant::now();
    stop_tx.send(()).expect("signal");
    let (_, closed) = read_to_close(&mut idle, Duration::from_secs(1)).await;
    assert!(closed, "an idle connection outlived the shutdown");
    assert!(
        TcpStream::connect(addr_of(&server)).await.is_err(),
        "still accepting after shutdown"
    );
    tokio::time::timeout(Duration::from_secs(5), handle)
        .await
        .expect("run returns within the grace")
        .expect("task")
        .expect("io");
    let took = stopped_at.elapsed();
    assert!(
        took >= Duration::from_millis(1_800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    drop(stream);
}
