//! Over a real socket against SQLite: concurrent refreshes of one token, the way clients
//! actually race.
use crate::harness::*;
use latchkey_server::{AppState, app};
use std::sync::Arc;

pub struct Running {
    pub base: String,
    pub state: AppState,
    _dir: tempfile::TempDir,
}

pub async fn start(config: latchkey_server::Config) -> Running {
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
    let service = app(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Running {
        base,
        state,
        _dir: dir,
    }
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
async fn read_events(
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

async fn login_sid(client: &reqwest::Client, base: &str, username: &str) -> (String, String) {
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
