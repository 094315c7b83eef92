//! Roles (API.md "Roles", docs/decisions/0011): the admin API, the `roles` claim, `/v1/me`,
//! `GET /v1/session`, forward auth (`X-Latchkey-Roles`, `?role=`), and the feed entries a
//! removal appends, in JSON and as Server-Sent Events.
use crate::harness::*;
use crate::socket::{login_sid, read_events, start};
use latchkey_server::config::Redacted;
use serde_json::{Value, json};
use std::time::Duration;

const ADMIN: &str = "admin-token-for-roles-tests";

async fn roles_app() -> TestApp {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    TestApp::with_config(config).await
}

async fn put_roles(app: &TestApp, id: &str, body: &Value) -> Response {
    app.call(
        "PUT",
        &format!("/admin/v1/users/{id}/roles"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
        Some(body),
    )
    .await
}

async fn set_roles(app: &TestApp, id: &str, roles: &[&str]) {
    let r = put_roles(app, id, &json!({ "roles": roles })).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

fn bearer(token: &str) -> (&'static str, String) {
    ("authorization", format!("Bearer {token}"))
}

async fn authorize(app: &TestApp, query: &str, header: (&str, &str)) -> Response {
    app.get(&format!("/v1/authorize{query}"), &[header]).await
}

#[tokio::test]
async fn operators_set_and_read_roles() {
    let app = roles_app().await;
    let user = app.sign_up("olga").await;
    let id = user["id"].as_str().expect("id");
    let auth = [("authorization", format!("Bearer {ADMIN}"))];
    let auth: Vec<(&str, &str)> = auth.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let r = app
        .call("GET", &format!("/admin/v1/users/{id}"), &auth, None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let shown = r.json();
    assert_eq!(shown["id"], id);
    assert_eq!(shown["username"], "olga");
    assert_eq!(shown["roles"], json!([]));
    assert!(shown["created_at"].is_string());

    // A set: sorted, duplicates dropped.
    let r = put_roles(&app, id, &json!({"roles": ["reader", "admin", "reader"]})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["roles"], json!(["admin", "reader"]));
    let r = app
        .call("GET", &format!("/admin/v1/users/{id}"), &auth, None)
        .await;
    assert_eq!(r.json()["roles"], json!(["admin", "reader"]));

    // Bad input is a 400 and changes nothing.
    let too_many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
    for bad in [
        json!({"roles": ["has space"]}),
        json!({"roles": [""]}),
        json!({"roles": ["x".repeat(65)]}),
        json!({"roles": ["a,b"]}),
        json!({"roles": too_many}),
        json!({"roles": "admin"}),
        json!({"roles": [1]}),
        json!({"role": ["admin"]}),
        json!({"roles": ["admin"], "extra": 1}),
    ] {
        put_roles(&app, id, &bad)
            .await
            .assert_error(400, "invalid_request");
    }
    let r = app
        .call("GET", &format!("/admin/v1/users/{id}"), &auth, None)
        .await;
    assert_eq!(r.json()["roles"], json!(["admin", "reader"]));

    // Unknown users, a wrong token.
    let unknown = latchkey_core::UserId::new().to_string();
    put_roles(&app, &unknown, &json!({"roles": []}))
        .await
        .assert_error(404, "not_found");
    app.call("GET", &format!("/admin/v1/users/{unknown}"), &auth, None)
        .await
        .assert_error(404, "not_found");
    app.call("GET", "/admin/v1/users/not-a-uuid", &auth, None)
        .await
        .assert_error(404, "not_found");
    app.call(
        "PUT",
        &format!("/admin/v1/users/{id}/roles"),
        &[("authorization", "Bearer wrong")],
        Some(&json!({"roles": []})),
    )
    .await
    .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn without_an_admin_token_roles_cannot_be_set() {
    let app = TestApp::new().await;
    let user = app.sign_up("nobody").await;
    let id = user["id"].as_str().expect("id");
    put_roles(&app, id, &json!({"roles": ["admin"]}))
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn roles_ride_in_tokens_me_and_the_cookie_session() {
    let app = roles_app().await;
    let user = app.sign_up("rita").await;
    let id = user["id"].as_str().expect("id");

    // None yet: the claim is present and empty.
    let t = app.login_again("rita").await;
    assert_eq!(jwt_part(&t.access, 1)["roles"], json!([]));
    assert_eq!(app.me(&t.access).await.json()["roles"], json!([]));

    set_roles(&app, id, &["admin", "billing:read"]).await;
    let t = app.login_again("rita").await;
    assert_eq!(
        jwt_part(&t.access, 1)["roles"],
        json!(["admin", "billing:read"])
    );
    let me = app.me(&t.access).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["roles"], json!(["admin", "billing:read"]));

    let b = app.browser_login("rita").await;
    let r = app.get("/v1/session", &[("cookie", &b.cookie)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["session"]["user"]["roles"],
        json!(["admin", "billing:read"])
    );
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/session/token",
            Some(&json!({"client_id": "spa"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        jwt_part(&r.str_field("access_token"), 1)["roles"],
        json!(["admin", "billing:read"])
    );

    // The next refresh carries the change; the session goes on.
    set_roles(&app, id, &["billing:read"]).await;
    app.clock.advance(time::Duration::seconds(1));
    let next = app.rotate(&t.refresh).await;
    assert_eq!(jwt_part(&next.access, 1)["roles"], json!(["billing:read"]));
    assert_eq!(
        app.me(&next.access).await.json()["roles"],
        json!(["billing:read"])
    );
    let r = app.get("/v1/session", &[("cookie", &b.cookie)]).await;
    assert_eq!(
        r.json()["session"]["user"]["roles"],
        json!(["billing:read"])
    );
}

#[tokio::test]
async fn forward_auth_reports_roles_and_requires_one_when_asked() {
    let app = roles_app().await;
    let user = app.sign_up("fiona").await;
    let id = user["id"].as_str().expect("id");
    set_roles(&app, id, &["admin", "reader"]).await;
    let t = app.login_again("fiona").await;
    let b = app.browser_login("fiona").await;
    let (name, value) = bearer(&t.access);
    let by_token = (name, value.as_str());
    let by_cookie = ("cookie", b.cookie.as_str());

    for who in [by_token, by_cookie] {
        let r = authorize(&app, "", who).await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-latchkey-roles"), Some("admin,reader"));
        assert_eq!(authorize(&app, "?role=admin", who).await.status, 200);
        assert_eq!(authorize(&app, "?role=reader", who).await.status, 200);
        authorize(&app, "?role=writer", who)
            .await
            .assert_error(403, "forbidden");
        for bad in [
            "?role=admin&role=reader",
            "?role=",
            "?role=has%20space",
            "?role=a%2Cb",
        ] {
            authorize(&app, bad, who)
                .await
                .assert_error(400, "invalid_request");
        }
    }
    // Without credentials a role check is still a 401, never a 403.
    app.get("/v1/authorize?role=admin", &[])
        .await
        .assert_error(401, "unauthorized");
    let r = authorize(&app, "?aud=api&role=admin", by_token).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A user without roles: an empty header.
    let other = app.sign_up("gus").await;
    assert!(other["id"].is_string());
    let g = app.login_again("gus").await;
    let (name, value) = bearer(&g.access);
    let r = authorize(&app, "", (name, value.as_str())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-latchkey-roles"), Some(""));
    authorize(&app, "?role=admin", (name, value.as_str()))
        .await
        .assert_error(403, "forbidden");

    // Removing a role: the cookie caller loses it at once, the token minted before the change
    // is stale (401), and a refresh brings a token that passes with the new roles.
    set_roles(&app, id, &["reader"]).await;
    authorize(&app, "?role=admin", by_cookie)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(authorize(&app, "?role=reader", by_cookie).await.status, 200);
    authorize(&app, "", by_token)
        .await
        .assert_error(401, "unauthorized");
    let next = app.rotate(&t.refresh).await;
    let (name, value) = bearer(&next.access);
    let r = authorize(&app, "", (name, value.as_str())).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-latchkey-roles"), Some("reader"));
    authorize(&app, "?role=admin", (name, value.as_str()))
        .await
        .assert_error(403, "forbidden");
    // Not logged out: the cookie session and the refreshed family both live on.
    assert_eq!(
        app.get("/v1/session", &[("cookie", &b.cookie)])
            .await
            .status,
        200
    );
    assert_eq!(app.me(&next.access).await.status, 200);

    // Granting needs no feed entry: the current token keeps passing, without the new role.
    set_roles(&app, id, &["reader", "writer"]).await;
    let r = authorize(&app, "", (name, value.as_str())).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-latchkey-roles"), Some("reader"));
    assert_eq!(
        authorize(&app, "?role=writer", by_cookie).await.status,
        200,
        "cookie callers see the grant at once"
    );
}

#[tokio::test]
async fn a_removal_appends_a_stale_entry_per_live_session_to_the_json_feed() {
    let app = roles_app().await;
    let user = app.sign_up("fred").await;
    let id = user["id"].as_str().expect("id");
    set_roles(&app, id, &["admin"]).await;
    let t = app.login_again("fred").await;
    let b = app.browser_login("fred").await;
    let token_sid = jwt_part(&t.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let before = app.get("/v1/revocations", &[]).await.json();
    assert_eq!(before["revoked"], json!([]), "granting adds nothing");

    let changed_at = latchkey_core::Clock::now(&app.clock);
    set_roles(&app, id, &[]).await;
    let feed = app.get("/v1/revocations", &[]).await.json();
    let entries = feed["revoked"].as_array().expect("array");
    assert_eq!(entries.len(), 2, "{feed}");
    let mut sids: Vec<&str> = entries
        .iter()
        .map(|e| e["sid"].as_str().expect("sid"))
        .collect();
    sids.sort();
    let mut expected = vec![token_sid.as_str(), b.sid.as_str()];
    expected.sort();
    assert_eq!(sids, expected);
    for e in entries {
        assert_eq!(e["iat_before"], changed_at.unix_timestamp() + 1, "{e}");
        assert!(e["exp"].as_i64().expect("exp") > changed_at.unix_timestamp());
    }
    // A later full revocation has no iat_before.
    app.post_form(
        "/oauth/revoke",
        &[("token", &t.refresh), ("client_id", "spa")],
    )
    .await;
    let after = app
        .get(&format!("/v1/revocations?after={}", feed["cursor"]), &[])
        .await
        .json();
    let last = &after["revoked"][0];
    assert_eq!(last["sid"], token_sid.as_str());
    assert!(last.get("iat_before").is_none(), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_feed_pushes_stale_entries_as_revoked_events() {
    let mut config = test_config();
    config.admin_token = Some(Redacted(ADMIN.into()));
    let server = start(config).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/v1/users", server.base))
        .json(&json!({"username": "sse-roles", "password": PASSWORD}))
        .send()
        .await
        .expect("sign up");
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let put = |roles: Vec<&'static str>| {
        let (client, url) = (
            client.clone(),
            format!("{}/admin/v1/users/{id}/roles", server.base),
        );
        async move {
            let r = client
                .put(url)
                .bearer_auth(ADMIN)
                .json(&json!({ "roles": roles }))
                .send()
                .await
                .expect("put roles");
            assert_eq!(r.status(), 200);
        }
    };
    put(vec!["admin"]).await;
    let (_, sid) = login_sid(&client, &server.base, "sse-roles").await;
    let mut stream = client
        .get(format!("{}/v1/revocations", server.base))
        .header("accept", "text/event-stream")
        .send()
        .await
        .expect("subscribe");
    assert_eq!(stream.status(), 200);
    let started = std::time::Instant::now();
    let changed_at = time::OffsetDateTime::now_utc().unix_timestamp();
    put(vec![]).await;
    // `read_events` also checks that the event is named `revoked`: old followers see a
    // revocation (they fail safe), new ones read `iat_before`.
    let events = read_events(&mut stream, 1, Duration::from_secs(5)).await;
    assert_eq!(events.len(), 1, "no event pushed");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(events[0].1["sid"], sid.as_str());
    let before = events[0].1["iat_before"].as_i64().expect("iat_before");
    assert!(
        before == changed_at + 1 || before == changed_at + 2,
        "{before} vs {changed_at}"
    );
}

/// `iat` has one-second resolution: a token minted with the new roles in the rest of the
/// removal's second would fall under its `iat_before`. Minting waits out that fraction, so the
/// refreshed token passes at once (docs/decisions/0011).
#[tokio::test]
async fn a_token_minted_in_the_second_of_a_removal_is_not_stale() {
    let app = roles_app().await;
    let now = latchkey_core::Clock::now(&app.clock);
    let base = time::OffsetDateTime::from_unix_timestamp(now.unix_timestamp() + 10).expect("time")
        + time::Duration::milliseconds(600);
    app.clock.set(base);
    let user = app.sign_up("sam").await;
    let id = user["id"].as_str().expect("id");
    set_roles(&app, id, &["admin"]).await;
    let t = app.login_again("sam").await;
    set_roles(&app, id, &[]).await;
    let (name, value) = bearer(&t.access);
    authorize(&app, "", (name, value.as_str()))
        .await
        .assert_error(401, "unauthorized");

    let started = std::time::Instant::now();
    let next = app.rotate(&t.refresh).await;
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "minted without waiting out the second: {:?}",
        started.elapsed()
    );
    let claims = jwt_part(&next.access, 1);
    assert_eq!(claims["iat"], base.unix_timestamp() + 1);
    assert_eq!(claims["roles"], json!([]));
    let (name, value) = bearer(&next.access);
    let r = authorize(&app, "", (name, value.as_str())).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// The largest role set allowed still fits in a token and a forward-auth header.
#[tokio::test]
async fn the_largest_role_set_fits_in_a_token() {
    let app = roles_app().await;
    let user = app.sign_up("max").await;
    let id = user["id"].as_str().expect("id");
    let many: Vec<String> = (0..64)
        .map(|i| format!("{i:02}{}", "r".repeat(62)))
        .collect();
    let r = put_roles(&app, id, &json!({ "roles": many })).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let t = app.login_again("max").await;
    assert_eq!(
        jwt_part(&t.access, 1)["roles"]
            .as_array()
            .expect("roles")
            .len(),
        64
    );
    let (name, value) = bearer(&t.access);
    let r = authorize(
        &app,
        "?role=00rrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrrr",
        (name, value.as_str()),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-latchkey-roles").map(|h| h.split(',').count()),
        Some(64)
    );
}
