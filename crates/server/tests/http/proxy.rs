//! `trusted_proxies`: forwarded client addresses believed only from a trusted peer, in the
//! sessions list and in the per-address throttles; IPv6 clients throttled per /64.
use crate::harness::*;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use latchkey_server::config::Rate;
use std::net::SocketAddr;
use std::time::Duration;

/// A password grant from the TCP peer `peer`, with extra headers.
async fn grant_from(
    app: &TestApp,
    peer: &str,
    headers: &[(&str, &str)],
    username: &str,
) -> Response {
    let body = serde_urlencoded::to_string([
        ("grant_type", "password"),
        ("username", username),
        ("password", PASSWORD),
        ("client_id", "spa"),
    ])
    .expect("form");
    let mut builder = Request::post("/oauth/token")
        .header("content-type", "application/x-www-form-urlencoded")
        .extension(ConnectInfo(peer.parse::<SocketAddr>().expect("peer")));
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    app.send(builder.body(Body::from(body)).expect("request"))
        .await
}

/// The `ip` the sessions list shows for the session of `access`.
async fn listed_ip(app: &TestApp, access: &str) -> String {
    let r = app
        .get(
            "/v1/sessions",
            &[("authorization", &format!("Bearer {access}"))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let current = list
        .as_array()
        .expect("list")
        .iter()
        .find(|s| s["current"] == true)
        .expect("the current session")
        .clone();
    current["ip"].as_str().expect("ip").to_string()
}

async fn login_ip(app: &TestApp, peer: &str, headers: &[(&str, &str)], user: &str) -> String {
    let r = grant_from(app, peer, headers, user).await;
    assert_eq!(r.status, 200, "{}", r.text());
    listed_ip(app, &r.str_field("access_token")).await
}

#[tokio::test]
async fn the_sessions_list_shows_the_forwarded_address_only_from_a_trusted_peer() {
    let mut config = test_config();
    config.trusted_proxies = vec!["10.0.0.0/8".into(), "fd00::/8".into()];
    let app = TestApp::with_config(config).await;
    app.sign_up("proxied").await;
    let xff = [("x-forwarded-for", "6.6.6.6, 203.0.113.9")];
    // Through a trusted proxy: the right-most address the proxy appended.
    assert_eq!(
        login_ip(&app, "10.1.2.3:5000", &xff, "proxied").await,
        "203.0.113.9"
    );
    assert_eq!(
        login_ip(
            &app,
            "[fd00::1]:5000",
            &[("forwarded", "for=\"[2001:db8::7]:1234\"")],
            "proxied"
        )
        .await,
        "2001:db8::7"
    );
    // Chains of trusted proxies are walked through.
    assert_eq!(
        login_ip(
            &app,
            "10.1.2.3:5000",
            &[("x-forwarded-for", "203.0.113.10, 10.9.9.9")],
            "proxied"
        )
        .await,
        "203.0.113.10"
    );
    // From anyone else the header is the client's own claim: ignored.
    assert_eq!(
        login_ip(&app, "198.51.100.7:5000", &xff, "proxied").await,
        "198.51.100.7"
    );
    // A malformed header from the proxy: the proxy's address, not a guess.
    assert_eq!(
        login_ip(
            &app,
            "10.1.2.3:5000",
            &[("x-forwarded-for", "203.0.113.9, bogus")],
            "proxied"
        )
        .await,
        "10.1.2.3"
    );

    // Without trusted_proxies nothing forwarded is believed.
    let plain = TestApp::new().await;
    plain.sign_up("direct").await;
    assert_eq!(
        login_ip(&plain, "10.1.2.3:5000", &xff, "direct").await,
        "10.1.2.3"
    );
}

#[tokio::test]
async fn per_address_throttles_count_forwarded_clients_apart_and_ipv6_per_64() {
    let mut config = test_config();
    config.trusted_proxies = vec!["10.0.0.1".into()];
    config.rate_limit.token_per_ip = Rate {
        per: Some((2, Duration::from_secs(60))),
    };
    let app = TestApp::with_config(config).await;
    app.sign_up("throttled").await;
    let app = &app;
    let via_proxy = |client: &'static str| async move {
        grant_from(
            app,
            "10.0.0.1:4000",
            &[("x-forwarded-for", client)],
            "throttled",
        )
        .await
        .status
        .as_u16()
    };
    assert_eq!(via_proxy("203.0.113.1").await, 200);
    assert_eq!(via_proxy("203.0.113.1").await, 200);
    assert_eq!(via_proxy("203.0.113.1").await, 429);
    // Another client behind the same proxy has its own bucket.
    assert_eq!(via_proxy("203.0.113.2").await, 200);
    // IPv6: the whole /64 is one client; the next /64 is another.
    assert_eq!(via_proxy("2001:db8:1:2::1").await, 200);
    assert_eq!(via_proxy("2001:db8:1:2:ffff::9").await, 200);
    assert_eq!(via_proxy("2001:db8:1:2:dead:beef::1").await, 429);
    assert_eq!(via_proxy("2001:db8:1:3::1").await, 200);
    // Direct IPv6 peers too.
    let direct = |peer: &'static str| async move {
        grant_from(app, peer, &[], "throttled")
            .await
            .status
            .as_u16()
    };
    assert_eq!(direct("[2001:db8:9:9::1]:1").await, 200);
    assert_eq!(direct("[2001:db8:9:9::2]:1").await, 200);
    assert_eq!(direct("[2001:db8:9:9:1:2:3:4]:1").await, 429);
}
