//! Over a real socket against SQLite: concurrent refreshes of one token, the way clients
//! actually race.
use crate::harness::*;
use latchkey_server::{AppState, app};
use std::sync::Arc;

struct Running {
    base: String,
    _dir: tempfile::TempDir,
}

async fn start(config: latchkey_server::Config) -> Running {
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let service = app(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, service).await });
    Running { base, _dir: dir }
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
