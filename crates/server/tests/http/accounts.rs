//! POST /v1/users and GET /v1/me, and the generic bad-input rules on a JSON endpoint.
use crate::harness::*;
use serde_json::json;

#[tokio::test]
async fn sign_up_returns_the_new_user() {
    let app = TestApp::new().await;
    let r = app
        .post_json(
            "/v1/users",
            &json!({"username": "Alice", "password": PASSWORD}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["username"], "alice", "stored in normalised form");
    assert!(uuid::Uuid::parse_str(body["id"].as_str().expect("id")).is_ok());
    let created = body["created_at"].as_str().expect("created_at");
    assert!(
        time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .is_ok()
    );
    assert!(created.ends_with('Z'), "UTC: {created}");
    assert!(!r.text().contains(PASSWORD) && !r.text().contains("argon2"));
}

#[tokio::test]
async fn look_alike_usernames_are_one_account() {
    let app = TestApp::new().await;
    app.sign_up("alice").await;
    for variant in ["ALICE", "Alice", "ａｌｉｃｅ"] {
        app.post_json(
            "/v1/users",
            &json!({"username": variant, "password": PASSWORD}),
        )
        .await
        .assert_error(409, "conflict");
    }
    // And each variant logs in to the same account.
    let first = app.password_grant("ＡＬＩＣＥ", PASSWORD, "spa").await;
    assert_eq!(first.status, 200, "{}", first.text());
}

/// Forms that NFKC and case folding map together (the Kelvin sign U+212A and "k", a
/// mathematical bold letter, a ligature) reach one account: sign-up as one, log in as the
/// other, and a second sign-up conflicts.
#[tokio::test]
async fn nfkc_case_folded_look_alikes_are_one_account() {
    let app = TestApp::new().await;
    let user = app.sign_up("\u{212A}arl").await;
    assert_eq!(user["username"], "karl");
    for login_as in ["karl", "KARL", "\u{1D424}arl", "\u{212A}ARL"] {
        let r = app.password_grant(login_as, PASSWORD, "spa").await;
        assert_eq!(r.status, 200, "{login_as}: {}", r.text());
        let claims = jwt_part(&r.str_field("access_token"), 1);
        assert_eq!(claims["sub"], user["id"], "{login_as}");
    }
    for again in ["karl", "\u{1D424}arl"] {
        app.post_json(
            "/v1/users",
            &json!({"username": again, "password": PASSWORD}),
        )
        .await
        .assert_error(409, "conflict");
    }
    let fish = app.sign_up("\u{FB01}sh").await;
    assert_eq!(fish["username"], "fish");
    app.post_json(
        "/v1/users",
        &json!({"username": "FISH", "password": PASSWORD}),
    )
    .await
    .assert_error(409, "conflict");
}

#[tokio::test]
async fn invalid_names_and_weak_passwords_are_400() {
    let app = TestApp::new().await;
    for (username, password) in [
        ("", PASSWORD),
        ("has space", PASSWORD),
        ("tab\tname", PASSWORD),
        (&"x".repeat(65) as &str, PASSWORD),
        ("bob", "short"),
        ("bob", &"p".repeat(4097)),
        ("bob", "bell\u{7}password"),
    ] {
        app.post_json(
            "/v1/users",
            &json!({"username": username, "password": password}),
        )
        .await
        .assert_error(400, "invalid_request");
    }
}

#[tokio::test]
async fn passwords_of_1024_characters_work_and_are_not_truncated() {
    let app = TestApp::new().await;
    let long = "ü".repeat(1024);
    let r = app
        .post_json("/v1/users", &json!({"username": "long", "password": long}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(app.password_grant("long", &long, "spa").await.status, 200);
    let mut almost = "ü".repeat(1023);
    almost.push('u');
    app.password_grant("long", &almost, "spa")
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn sign_up_can_be_disabled() {
    let mut config = test_config();
    config.signup = false;
    let app = TestApp::with_config(config).await;
    app.post_json("/v1/users", &json!({"username": "x", "password": PASSWORD}))
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn malformed_bodies_get_clean_4xx() {
    let app = TestApp::new().await;
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        (
            "application/json",
            b"{not json".to_vec(),
            400,
            "invalid_request",
        ),
        ("application/json", b"".to_vec(), 400, "invalid_request"),
        ("application/json", b"[]".to_vec(), 400, "invalid_request"),
        (
            "application/json",
            br#"{"username": 5, "password": "x"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            br#"{"username": "a"}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            br#"{"username": "a", "password": "pppppppppp", "admin": true}"#.to_vec(),
            400,
            "invalid_request",
        ),
        (
            "application/json",
            vec![0xff, 0xfe, 0x00],
            400,
            "invalid_request",
        ),
        (
            "text/plain",
            br#"{"username":"a","password":"pppppppppp"}"#.to_vec(),
            415,
            "unsupported_media_type",
        ),
        (
            "application/x-www-form-urlencoded",
            b"username=a&password=pppppppppp".to_vec(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (content_type, body, status, code) in cases {
        app.post_raw("/v1/users", content_type, body, &[])
            .await
            .assert_error(status, code);
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413() {
    let app = TestApp::new().await;
    let big = json!({"username": "a", "password": "x".repeat(65_536)})
        .to_string()
        .into_bytes();
    app.post_raw("/v1/users", "application/json", big, &[])
        .await
        .assert_error(413, "payload_too_large");
    let form = format!(
        "grant_type=password&username=a&password={}",
        "x".repeat(70_000)
    )
    .into_bytes();
    app.post_raw(
        "/oauth/token",
        "application/x-www-form-urlencoded",
        form,
        &[],
    )
    .await
    .assert_error(413, "payload_too_large");
    // Just under the limit is not refused for size.
    let fits = format!(
        "grant_type=password&username=a&client_id=spa&password={}",
        "x".repeat(65_000)
    )
    .into_bytes();
    let r = app
        .post_raw(
            "/oauth/token",
            "application/x-www-form-urlencoded",
            fits,
            &[],
        )
        .await;
    assert_ne!(r.status, 413);
}

#[tokio::test]
async fn me_with_a_bearer_token() {
    let app = TestApp::new().await;
    let user = app.sign_up("carol").await;
    let pair = app.login_again("carol").await;
    let r = app.me(&pair.access).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["id"], user["id"]);
    assert_eq!(body["username"], "carol");
    assert_eq!(body["session_id"], jwt_part(&pair.access, 1)["sid"]);
}

#[tokio::test]
async fn me_refuses_missing_garbage_and_expired_tokens() {
    let app = TestApp::new().await;
    let pair = app.login("dave").await;
    app.get("/v1/me", &[])
        .await
        .assert_error(401, "unauthorized");
    for bad in [
        "garbage",
        "a.b.c",
        "",
        &pair.refresh,
        &format!("{}x", pair.access),
    ] {
        app.me(bad).await.assert_error(401, "unauthorized");
    }
    let basic = app
        .get("/v1/me", &[("authorization", "Basic ZGF2ZTpwdw==")])
        .await;
    basic.assert_error(401, "unauthorized");
    assert_eq!(basic.header("www-authenticate"), Some("Bearer"));
    // 15 minutes later the access token has expired (1 s leeway at most).
    app.clock.advance(time::Duration::seconds(15 * 60));
    assert_eq!(
        app.me(&pair.access).await.status,
        200,
        "still valid inside the 1 s leeway"
    );
    app.clock.advance(time::Duration::seconds(2));
    app.me(&pair.access).await.assert_error(401, "unauthorized");
}

#[tokio::test]
async fn unknown_paths_and_methods_use_the_error_body() {
    let app = TestApp::new().await;
    app.get("/v1/nothing-here", &[])
        .await
        .assert_error(404, "not_found");
    app.get("/oauth/token", &[])
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn a_token_naming_another_users_session_is_refused() {
    let app = TestApp::new().await;
    let alice = app.login("alice2").await;
    let bob = app.login("bob2").await;
    // A token Latchkey signed for bob, but carrying alice's live sid (as a buggy or malicious
    // signer might): the session must belong to the token's subject.
    let mut claims: latchkey_tokens::AccessTokenClaims =
        serde_json::from_value(jwt_part(&bob.access, 1)).expect("claims");
    claims.sid = jwt_part(&alice.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let forged = app.state.keyring().sign(&claims).expect("sign");
    app.me(&forged).await.assert_error(401, "unauthorized");
    assert_eq!(app.me(&bob.access).await.status, 200);
}

/// `[[clients]] account_api = false`: that client's tokens are for its API only, never for
/// Latchkey's own account endpoints (401); other clients' tokens still are.
#[tokio::test]
async fn tokens_of_a_client_without_account_api_cannot_manage_the_account() {
    let mut config = test_config();
    config.clients.push(latchkey_server::config::ClientConfig {
        id: "widget".into(),
        audience: "widget-api".into(),
        grant_types: grants(&["password", "refresh_token"]),
        account_api: false,
        ..Default::default()
    });
    let app = TestApp::with_config(config).await;
    app.sign_up("wanda").await;
    let r = app.password_grant("wanda", PASSWORD, "widget").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let widget = format!("Bearer {}", r.str_field("access_token"));
    let spa = format!("Bearer {}", app.login_again("wanda").await.access);
    for (method, path) in [
        ("GET", "/v1/me"),
        ("GET", "/v1/sessions"),
        ("POST", "/v1/sessions/revoke-others"),
    ] {
        app.call(method, path, &[("authorization", &widget)], None)
            .await
            .assert_error(401, "unauthorized");
    }
    app.call(
        "POST",
        "/v1/password",
        &[("authorization", &widget)],
        Some(&json!({"current_password": PASSWORD, "new_password": "another long password"})),
    )
    .await
    .assert_error(401, "unauthorized");
    assert_eq!(app.me(&r.str_field("access_token")).await.status, 401);
    let r = app
        .call("GET", "/v1/sessions", &[("authorization", &spa)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json().as_array().expect("list").len(),
        2,
        "nothing was revoked"
    );
}
