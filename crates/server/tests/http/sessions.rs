//! The sessions API and password change, across both session kinds.
use crate::harness::*;
use serde_json::json;

fn ids(list: &serde_json::Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|s| s["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn the_list_shows_both_kinds_and_marks_the_current_one() {
    let app = TestApp::new().await;
    app.sign_up("alice").await;
    let b = app.browser_login("alice").await;
    let t = app.login_again("alice").await;
    let token_sid = jwt_part(&t.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    app.sign_up("bob").await;
    let stranger = app.browser_login("bob").await;

    let r = app
        .call("GET", "/v1/sessions", &[("cookie", &b.cookie)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let list = r.json();
    let mut got = ids(&list);
    got.sort();
    let mut want = vec![b.sid.clone(), token_sid.clone()];
    want.sort();
    assert_eq!(
        got, want,
        "the stranger's session {} must not show",
        stranger.sid
    );
    for s in list.as_array().expect("array") {
        let current = s["id"] == b.sid.as_str();
        assert_eq!(s["current"], current);
        assert_eq!(s["kind"], if current { "cookie" } else { "token" });
        for field in ["created_at", "last_seen_at"] {
            assert!(s[field].as_str().is_some_and(|t| t.ends_with('Z')), "{s}");
        }
        assert!(s.get("user_agent").is_some() && s.get("ip").is_some());
    }
    // The same list with the Bearer token, where the token session is current.
    let r = app.me_like("/v1/sessions", &t.access).await;
    let current: Vec<_> = r
        .json()
        .as_array()
        .expect("array")
        .iter()
        .filter(|s| s["current"] == true)
        .cloned()
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], token_sid.as_str());
}

trait BearerGet {
    async fn me_like(&self, path: &str, token: &str) -> Response;
}
impl BearerGet for TestApp {
    async fn me_like(&self, path: &str, token: &str) -> Response {
        self.get(path, &[("authorization", &format!("Bearer {token}"))])
            .await
    }
}

#[tokio::test]
async fn revoking_a_token_session_from_the_browser_kills_its_family() {
    let app = TestApp::new().await;
    app.sign_up("carol").await;
    let b = app.browser_login("carol").await;
    let t = app.login_again("carol").await;
    let sid = jwt_part(&t.access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let r = app
        .as_browser(&b, "DELETE", &format!("/v1/sessions/{sid}"), None)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    app.refresh(&t.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&t.access).await.assert_error(401, "unauthorized");
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoking_a_cookie_session_with_a_bearer_token() {
    let app = TestApp::new().await;
    app.sign_up("dan").await;
    let b = app.browser_login("dan").await;
    let t = app.login_again("dan").await;
    let r = app
        .call(
            "DELETE",
            &format!("/v1/sessions/{}", b.sid),
            &[("authorization", &format!("Bearer {}", t.access))],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn only_your_own_sessions_can_be_revoked() {
    let app = TestApp::new().await;
    app.sign_up("erin").await;
    app.sign_up("fay").await;
    let erin = app.browser_login("erin").await;
    let fay = app.browser_login("fay").await;
    for path in [
        format!("/v1/sessions/{}", fay.sid),
        format!("/v1/sessions/{}", uuid::Uuid::new_v4()),
        "/v1/sessions/not-a-uuid".to_string(),
        "/v1/sessions/..%2F..%2Fadmin".to_string(),
    ] {
        app.as_browser(&erin, "DELETE", &path, None)
            .await
            .assert_error(404, "not_found");
    }
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &fay.cookie)], None)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn revoking_the_current_cookie_session_clears_the_cookie() {
    let app = TestApp::new().await;
    app.sign_up("gus").await;
    let b = app.browser_login("gus").await;
    let r = app
        .as_browser(&b, "DELETE", &format!("/v1/sessions/{}", b.sid), None)
        .await;
    assert_eq!(r.status, 204);
    assert!(
        r.header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
}

#[tokio::test]
async fn revoke_others_keeps_only_the_current_session() {
    let app = TestApp::new().await;
    app.sign_up("hal").await;
    let b = app.browser_login("hal").await;
    let other_cookie = app.browser_login("hal").await;
    let t1 = app.login_again("hal").await;
    let t2 = app.login_again("hal").await;
    assert_eq!(
        app.as_browser(&b, "POST", "/v1/sessions/revoke-others", None)
            .await
            .status,
        204
    );
    app.call(
        "GET",
        "/v1/session",
        &[("cookie", &other_cookie.cookie)],
        None,
    )
    .await
    .assert_error(401, "unauthorized");
    for t in [&t1, &t2] {
        app.refresh(&t.refresh)
            .await
            .assert_error(400, "invalid_grant");
        app.me(&t.access).await.assert_error(401, "unauthorized");
    }
    let list = app
        .call("GET", "/v1/sessions", &[("cookie", &b.cookie)], None)
        .await
        .json();
    assert_eq!(ids(&list), vec![b.sid.clone()]);
}

#[tokio::test]
async fn password_change_revokes_every_other_session_of_both_kinds() {
    let app = TestApp::new().await;
    app.sign_up("ida").await;
    let b = app.browser_login("ida").await;
    let other_cookie = app.browser_login("ida").await;
    let t = app.login_again("ida").await;
    let new_password = "a brand new passphrase";
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&json!({"current_password": PASSWORD, "new_password": new_password})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
            .await
            .status,
        200,
        "current one survives"
    );
    app.call(
        "GET",
        "/v1/session",
        &[("cookie", &other_cookie.cookie)],
        None,
    )
    .await
    .assert_error(401, "unauthorized");
    app.refresh(&t.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.me(&t.access).await.assert_error(401, "unauthorized");
    app.password_grant("ida", PASSWORD, "spa")
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(
        app.password_grant("ida", new_password, "spa").await.status,
        200
    );
}

#[tokio::test]
async fn password_change_by_bearer_keeps_that_token_session() {
    let app = TestApp::new().await;
    app.sign_up("jon").await;
    let t = app.login_again("jon").await;
    let b = app.browser_login("jon").await;
    let r = app
        .call(
            "POST",
            "/v1/password",
            &[("authorization", &format!("Bearer {}", t.access))],
            Some(&json!({"current_password": PASSWORD, "new_password": "yet another passphrase"})),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(app.me(&t.access).await.status, 200);
    assert_eq!(app.refresh(&t.refresh).await.status, 200);
    app.call("GET", "/v1/session", &[("cookie", &b.cookie)], None)
        .await
        .assert_error(401, "unauthorized");
}

#[tokio::test]
async fn a_wrong_current_password_changes_nothing() {
    let app = TestApp::new().await;
    app.sign_up("kim").await;
    let b = app.browser_login("kim").await;
    let other = app.browser_login("kim").await;
    let r = app
        .as_browser(&b, "POST", "/v1/password", Some(&json!({"current_password": "not my password", "new_password": "a brand new passphrase"})))
        .await;
    r.assert_error(403, "forbidden");
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &other.cookie)], None)
            .await
            .status,
        200
    );
    assert_eq!(app.password_grant("kim", PASSWORD, "spa").await.status, 200);
    // A new password under the policy is a 400 and changes nothing either.
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(app.password_grant("kim", PASSWORD, "spa").await.status, 200);
    assert_eq!(
        app.call("GET", "/v1/session", &[("cookie", &other.cookie)], None)
            .await
            .status,
        200
    );
    app.as_browser(
        &b,
        "POST",
        "/v1/password",
        Some(&json!({"current_password": PASSWORD})),
    )
    .await
    .assert_error(400, "invalid_request");
    app.call(
        "POST",
        "/v1/password",
        &[],
        Some(&json!({"current_password": PASSWORD, "new_password": "x"})),
    )
    .await
    .assert_error(401, "unauthorized");
}
