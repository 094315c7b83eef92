//! The revocation feed (JSON and SSE) and forward authentication.
use crate::harness::*;
use latchkey_server::config::Redacted;
use serde_json::json;

fn sids(feed: &serde_json::Value) -> Vec<String> {
    feed["revoked"]
        .as_array()
        .expect("revoked")
        .iter()
        .map(|e| e["sid"].as_str().expect("sid").to_string())
        .collect()
}

fn sid_of(pair: &Pair) -> String {
    jwt_part(&pair.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string()
}

#[tokio::test]
async fn every_kind_of_revocation_reaches_the_feed() {
    let mut config = test_config();
    config.admin_token = Some(Redacted("admin-token-0123456789".into()));
    let app = TestApp::with_config(config).await;
    let empty = app.get("/v1/revocations", &[]).await;
    assert_eq!(empty.status, 200);
    assert_eq!(empty.json(), json!({"cursor": 0, "revoked": []}));

    // Logout through /oauth/revoke.
    let a = app.login("alice").await;
    app.post_form(
        "/oauth/revoke",
        &[("token", &a.refresh), ("client_id", "spa")],
    )
    .await;
    // Reuse detection.
    let b = app.login_again("alice").await;
    app.rotate(&b.refresh).await;
    app.refresh(&b.refresh).await;
    // Password change (revokes the others), from a cookie session.
    let c = app.login_again("alice").await;
    let browser = app.browser_login("alice").await;
    app.as_browser(
        &browser,
        "POST",
        "/v1/password",
        Some(&json!({"current_password": PASSWORD, "new_password": "new passphrase!"})),
    )
    .await;
    // Cookie logout.
    app.as_browser(&browser, "DELETE", "/v1/session", None)
        .await;
    // Ban.
    let user = app.sign_up("bob").await;
    let d = app.login_again("bob").await;
    app.call(
        "POST",
        &format!("/admin/v1/users/{}/ban", user["id"].as_str().expect("id")),
        &[("authorization", "Bearer admin-token-0123456789")],
        None,
    )
    .await;

    let feed = app.get("/v1/revocations", &[]).await.json();
    let got = sids(&feed);
    for (what, sid) in [
        ("revoke", sid_of(&a)),
        ("reuse", sid_of(&b)),
        ("password", sid_of(&c)),
        ("logout", browser.sid.clone()),
        ("ban", sid_of(&d)),
    ] {
        assert!(got.contains(&sid), "{what} missing from {feed}");
    }
    use latchkey_core::Clock;
    let now = app.clock.now().unix_timestamp();
    for e in feed["revoked"].as_array().expect("array") {
        assert_eq!(
            e["exp"].as_i64(),
            Some(now + 900),
            "exp = when the last access token can expire: {e}"
        );
    }
    let cursor = feed["cursor"].as_i64().expect("cursor");
    let rest = app
        .get(&format!("/v1/revocations?after={cursor}"), &[])
        .await
        .json();
    assert_eq!(rest, json!({"cursor": cursor, "revoked": []}));
    let partial = app.get("/v1/revocations?after=1", &[]).await.json();
    assert_eq!(sids(&partial), got[1..].to_vec());
}

#[tokio::test]
async fn events_leave_the_feed_when_their_tokens_have_expired() {
    let app = TestApp::new().await;
    let a = app.login("carol").await;
    app.post_form(
        "/oauth/revoke",
        &[("token", &a.access), ("client_id", "spa")],
    )
    .await;
    assert_eq!(sids(&app.get("/v1/revocations", &[]).await.json()).len(), 1);
    app.clock.advance(time::Duration::minutes(15));
    assert!(sids(&app.get("/v1/revocations", &[]).await.json()).is_empty());
}

#[tokio::test]
async fn malformed_cursors_are_400() {
    let app = TestApp::new().await;
    for bad in ["abc", "-1", "1.5", "99999999999999999999999", "%00"] {
        app.get(&format!("/v1/revocations?after={bad}"), &[])
            .await
            .assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn the_feed_can_require_a_token() {
    let mut config = test_config();
    config.feed_token = Some(Redacted("feed-token-0123456789".into()));
    let app = TestApp::with_config(config).await;
    app.get("/v1/revocations", &[])
        .await
        .assert_error(401, "unauthorized");
    app.get("/v1/revocations", &[("authorization", "Bearer wrong")])
        .await
        .assert_error(401, "unauthorized");
    assert_eq!(
        app.get(
            "/v1/revocations",
            &[("authorization", "Bearer feed-token-0123456789")]
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn forward_auth_by_bearer_and_cookie() {
    let app = TestApp::new().await;
    let user = app.sign_up("dan").await;
    let t = app.login_again("dan").await;
    let r = app
        .get(
            "/v1/authorize",
            &[("authorization", &format!("Bearer {}", t.access))],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-latchkey-user"), user["id"].as_str());
    assert_eq!(r.header("x-latchkey-username"), Some("dan"));
    assert_eq!(r.header("x-latchkey-session"), Some(sid_of(&t).as_str()));
    let b = app.browser_login("dan").await;
    let r = app.get("/v1/authorize", &[("cookie", &b.cookie)]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-latchkey-session"), Some(b.sid.as_str()));
    // Revoked at once, for both.
    app.post_form(
        "/oauth/revoke",
        &[("token", &t.refresh), ("client_id", "spa")],
    )
    .await;
    app.get(
        "/v1/authorize",
        &[("authorization", &format!("Bearer {}", t.access))],
    )
    .await
    .assert_error(401, "unauthorized");
    app.as_browser(&b, "DELETE", "/v1/session", None).await;
    app.get("/v1/authorize", &[("cookie", &b.cookie)])
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn forward_auth_refuses_garbage_without_500s() {
    let app = TestApp::new().await;
    app.get("/v1/authorize", &[])
        .await
        .assert_error(401, "unauthorized");
    let huge = format!("Bearer {}", "a".repeat(1_000_000));
    for auth in [
        "Bearer",
        "Bearer ",
        "Bearer a.b.c",
        "Basic Zm9vOmJhcg==",
        &huge,
    ] {
        let r = app.get("/v1/authorize", &[("authorization", auth)]).await;
        assert!(
            r.status == 401 || r.status == 431,
            "{}: {}",
            &auth[..auth.len().min(20)],
            r.status
        );
    }
}

#[tokio::test]
async fn a_revocation_on_one_instance_reaches_another_through_the_store() {
    let first = TestApp::sqlite(test_config()).await;
    let second = TestApp::build(test_config(), first.store.clone(), None).await;
    let t = first.login("erin").await;
    let auth = format!("Bearer {}", t.access);
    assert_eq!(
        second
            .get("/v1/authorize", &[("authorization", &auth)])
            .await
            .status,
        200
    );
    first
        .post_form(
            "/oauth/revoke",
            &[("token", &t.refresh), ("client_id", "spa")],
        )
        .await;
    // The second instance learns it from the log (its follower polls; here, once by hand).
    second
        .state
        .follower
        .poll_once(&second.state)
        .await
        .expect("poll");
    second
        .get("/v1/authorize", &[("authorization", &auth)])
        .await
        .assert_error(401, "unauthorized");
    second.me(&t.access).await.assert_error(401, "unauthorized");
}

/// Forward auth allows 1 s of clock leeway past a token's `exp`, so a revocation must be
/// remembered for that second too: by the instance that already knew it and by one that
/// reads the log for the first time in that second.
#[tokio::test]
async fn a_revoked_token_stays_refused_through_the_leeway_second() {
    use latchkey_core::Clock;
    let first = TestApp::sqlite(test_config()).await;
    let t = first.login("fred").await;
    let auth = format!("Bearer {}", t.access);
    first
        .post_form(
            "/oauth/revoke",
            &[("token", &t.refresh), ("client_id", "spa")],
        )
        .await;
    let exp = jwt_part(&t.access, 1)["exp"].as_i64().expect("exp");
    let at_exp = time::OffsetDateTime::from_unix_timestamp(exp).expect("time")
        + time::Duration::milliseconds(500);
    first.clock.set(at_exp);
    first
        .state
        .follower
        .poll_once(&first.state)
        .await
        .expect("poll");
    first
        .get("/v1/authorize", &[("authorization", &auth)])
        .await
        .assert_error(401, "unauthorized");

    // A follower that starts reading the log in that second learns it as well.
    let fresh = latchkey_server::feed::Follower::default();
    fresh.poll_once(&first.state).await.expect("poll");
    let sid = latchkey_core::SessionId::parse(&sid_of(&t)).expect("sid");
    assert!(fresh.is_revoked(&sid));
    assert_eq!(first.clock.now(), at_exp);
}

/// `GET /v1/authorize?aud=A`: a Bearer token whose audience is not A is 401, so a token
/// minted for one API does not pass forward auth for every app. Cookies are not bound to
/// an audience; a malformed `aud` is 400.
#[tokio::test]
async fn forward_auth_can_require_an_audience() {
    let app = TestApp::new().await;
    let t = app.login("gina").await; // client spa: audience "api"
    let auth = format!("Bearer {}", t.access);
    let bearer = [("authorization", auth.as_str())];
    for path in ["/v1/authorize", "/v1/authorize?aud=api"] {
        let r = app.get(path, &bearer).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in [
        "/v1/authorize?aud=internal",
        "/v1/authorize?aud=ap",
        "/v1/authorize?aud=api2",
    ] {
        app.get(path, &bearer)
            .await
            .assert_error(401, "unauthorized");
    }
    app.get("/v1/authorize?aud=", &bearer)
        .await
        .assert_error(400, "invalid_request");
    let b = app.browser_login("gina").await;
    let r = app
        .get("/v1/authorize?aud=internal", &[("cookie", &b.cookie)])
        .await;
    assert_eq!(r.status, 200, "cookie sessions carry no audience");
}
