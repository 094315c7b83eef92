//! Login and token throttles: 429 with Retry-After, per account and per IP, recovering quickly.
use crate::harness::*;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::Request;
use latchkey_server::config::Rate;
use std::net::SocketAddr;
use std::time::Duration;
use tower::ServiceExt;

fn rate(n: u32, secs: u64) -> Rate {
    Rate {
        per: Some((n, Duration::from_secs(secs))),
    }
}

/// Sends a password grant as if from `ip`.
async fn login_from(
    app: &TestApp,
    ip: [u8; 4],
    username: &str,
    password: &str,
) -> (u16, Option<String>) {
    let router = app
        .router
        .clone()
        .layer(MockConnectInfo(SocketAddr::from((ip, 40000))));
    let body = serde_urlencoded::to_string([
        ("grant_type", "password"),
        ("username", username),
        ("password", password),
        ("client_id", "spa"),
    ])
    .expect("form");
    let request = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(body))
        .expect("request");
    let response = router.oneshot(request).await.expect("infallible");
    let retry = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (response.status().as_u16(), retry)
}

/// `login_per_account` counts failed logins per (account, address): guesses from one address
/// run out there (429 naming a wait, even for the right password) while the owner, from
/// another address, still logs in. Over all addresses an account gets 3x; refused (429)
/// attempts and successful logins take nothing.
#[tokio::test]
async fn per_account_throttle_never_locks_the_owner_out_from_elsewhere() {
    let mut config = test_config();
    config.rate_limit.login_per_account = rate(3, 60);
    let app = TestApp::with_config(config).await;
    app.sign_up("alice").await;
    let attacker = [10, 0, 0, 1];
    let owner = [192, 168, 1, 20];
    for _ in 0..3 {
        assert_eq!(
            login_from(&app, attacker, "alice", "wrong password")
                .await
                .0,
            400
        );
    }
    let (status, retry) = login_from(&app, attacker, "ALICE", PASSWORD).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!(
        (1..=20).contains(&retry),
        "one slot refills every 20 s: {retry}"
    );
    // The owner, elsewhere, is not locked out by someone else's guesses.
    for _ in 0..5 {
        assert_eq!(login_from(&app, owner, "alice", PASSWORD).await.0, 200);
    }
    // Refused attempts don't count: hammering on changes nothing for the others.
    for _ in 0..20 {
        assert_eq!(
            login_from(&app, attacker, "alice", "wrong password")
                .await
                .0,
            429
        );
    }
    // Over all addresses: 3x the budget (9 failures), then the account waits everywhere.
    for ip in [[10, 0, 0, 2], [10, 0, 0, 3]] {
        for _ in 0..3 {
            assert_eq!(login_from(&app, ip, "alice", "wrong password").await.0, 400);
        }
    }
    let (status, retry) = login_from(&app, owner, "alice", PASSWORD).await;
    assert_eq!(status, 429);
    let retry: u64 = retry.expect("Retry-After").parse().expect("seconds");
    assert!((1..=7).contains(&retry), "one slot in 60/9 s: {retry}");
    // Other accounts are unaffected.
    app.sign_up("bob").await;
    assert_eq!(login_from(&app, attacker, "bob", PASSWORD).await.0, 200);
}

/// A failed login is one `latchkey::security` line with a stable shape for fail2ban: event
/// name, normalised and bounded username, client address.
#[tokio::test]
async fn failed_logins_are_logged_for_fail2ban() {
    let logs = crate::observability::captured_logs().clone();
    let app = TestApp::new().await;
    app.sign_up("fail2ban-user").await;
    login_from(&app, [198, 18, 7, 7], "FAIL2BAN-User", "wrong password").await;
    login_from(&app, [198, 18, 7, 8], "no such user with spaces", "x").await;
    let text = logs.text();
    let line = text
        .lines()
        .find(|l| l.contains("ip=198.18.7.7"))
        .unwrap_or_else(|| panic!("no line for the failed login"));
    assert!(line.contains("latchkey::security"), "{line}");
    assert!(
        line.contains("event=login_failed mode=token username=fail2ban-user ip=198.18.7.7"),
        "{line}"
    );
    assert!(line.contains("username=fail2ban-user"), "{line}");
    assert!(line.contains("authentication failed"), "{line}");
    let line = text
        .lines()
        .find(|l| l.contains("ip=198.18.7.8"))
        .unwrap_or_else(|| panic!("no line for the unknown user"));
    assert!(line.contains("username=no?such?user?with?spaces"), "{line}");
    assert!(!line.contains("wrong password"));
}

#[tokio::test]
async fn per_ip_throttle() {
    let mut config = test_config();
    config.rate_limit.login_per_ip = rate(3, 60);
    let app = TestApp::with_config(config).await;
    for i in 0..3 {
        assert_eq!(
            login_from(&app, [192, 0, 2, 1], &format!("user{i}"), "pw-guess-123")
                .await
                .0,
            400
        );
    }
    assert_eq!(
        login_from(&app, [192, 0, 2, 1], "user9", "pw-guess-123")
            .await
            .0,
        429
    );
    assert_eq!(
        login_from(&app, [192, 0, 2, 2], "user9", "pw-guess-123")
            .await
            .0,
        400,
        "another IP is fine"
    );
}

#[tokio::test]
async fn an_attacker_cannot_lock_the_user_out_for_long() {
    let mut config = test_config();
    // 4 per address, 12 over all addresses, per 24 s: one slot back every 2 s.
    config.rate_limit.login_per_account = rate(4, 24);
    let app = TestApp::with_config(config).await;
    app.sign_up("carol").await;
    // Guesses from three addresses use up the account's budget over all addresses.
    for attacker in [[203, 0, 113, 7], [203, 0, 113, 8], [203, 0, 113, 9]] {
        for _ in 0..4 {
            login_from(&app, attacker, "carol", "guess-guess").await;
        }
    }
    assert_eq!(
        login_from(&app, [198, 51, 100, 1], "carol", PASSWORD)
            .await
            .0,
        429
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        login_from(&app, [198, 51, 100, 1], "carol", PASSWORD)
            .await
            .0,
        200,
        "the real user gets in once the attack stops"
    );
}

#[tokio::test]
async fn token_endpoint_throttle_covers_refreshes() {
    let mut config = test_config();
    config.rate_limit.token_per_ip = rate(5, 60);
    let app = TestApp::with_config(config).await;
    let mut pair = app.login("dora").await;
    for _ in 0..4 {
        pair = app.rotate(&pair.refresh).await;
    }
    let r = app.refresh(&pair.refresh).await;
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
}

/// Guesses sent at once are each counted before their password check runs: a burst of
/// concurrent wrong passwords from many addresses gets at most the account's budget over all
/// addresses (3x `login_per_account`) of answers; the rest are 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_guesses_cannot_overrun_the_account_budget() {
    let mut config = test_config();
    config.rate_limit.login_per_account = rate(3, 60);
    let app = std::sync::Arc::new(TestApp::with_config(config).await);
    app.sign_up("alice").await;
    // Spawned all at once (collected), then awaited.
    let guesses: Vec<_> = (0..60u8)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                login_from(&app, [10, 1, i / 3, i], "alice", "wrong password")
                    .await
                    .0
            })
        })
        .collect();
    let mut answered = 0;
    for guess in guesses {
        match guess.await.expect("task") {
            400 => answered += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(
        answered <= 9,
        "{answered} guesses were checked; the budget over all addresses is 9"
    );
    assert!(answered >= 1, "some guesses must have been checked");
}
