//! OpenID Connect beside the authorization flow: UserInfo, RP-Initiated Logout (with its
//! CSRF confirmation and open-redirect defences) and the client_credentials grant.
use crate::harness::*;
use latchkey_server::config::{ClientConfig, ClientKind, Config, Redacted};
use latchkey_tokens::IdTokenClaims;
use serde_json::Value;

const SVC_SECRET: &str = "svc-secret-0123456789abcdef";
const BYE: &str = "http://127.0.0.1:5173/bye";
const BYE_WITH_QUERY: &str = "https://rp.example.com/after?from=latchkey";
const OTHER_BYE: &str = "https://other.example.com/bye";

/// The test clients plus `rp` (OIDC scopes, account_api = false, logout URIs), `other` (another
/// RP with its own logout URI) and `svc` (client_credentials).
fn oidc_config() -> Config {
    let mut config = test_config();
    config.clients.extend([
        ClientConfig {
            id: "rp".into(),
            name: Some("Relying <Party>".into()),
            audience: "api".into(),
            scopes: grants(&["read", "openid", "profile"]),
            grant_types: grants(&["password", "refresh_token", "authorization_code"]),
            post_logout_redirect_uris: vec![BYE.into(), BYE_WITH_QUERY.into()],
            allowed_origins: vec![SPA_ORIGIN.into()],
            account_api: false,
            ..ClientConfig::default()
        },
        ClientConfig {
            id: "other".into(),
            audience: "api".into(),
            scopes: grants(&["openid"]),
            grant_types: grants(&["password"]),
            post_logout_redirect_uris: vec![OTHER_BYE.into()],
            ..ClientConfig::default()
        },
        ClientConfig {
            id: "svc".into(),
            kind: ClientKind::Confidential,
            secret: Some(Redacted(SVC_SECRET.into())),
            audience: "jobs".into(),
            scopes: grants(&["jobs:read", "jobs:write"]),
            grant_types: grants(&["client_credentials"]),
            ..ClientConfig::default()
        },
    ]);
    config
}

async fn oidc_app() -> TestApp {
    TestApp::with_config(oidc_config()).await
}

/// A password-grant access token of `rp` with `scope`.
async fn rp_token(app: &TestApp, username: &str, scope: &str) -> String {
    let r = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "password"),
                ("username", username),
                ("password", PASSWORD),
                ("client_id", "rp"),
                ("scope", scope),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.str_field("access_token")
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn userinfo(app: &TestApp, token: &str) -> Response {
    app.get("/oauth/userinfo", &[("authorization", &bearer(token))])
        .await
}

/// The token with one character of its signature changed (a middle one: the last carries
/// padding bits).
fn tamper(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

fn assert_invalid_token(r: &Response) {
    r.assert_error(401, "invalid_token");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
}

// ---------------------------------------------------------------------------------------------
// UserInfo

#[tokio::test]
async fn userinfo_answers_sub_and_with_profile_the_username() {
    let app = oidc_app().await;
    let user = app.sign_up("ursula").await;
    let id = user["id"].as_str().expect("id");

    let token = rp_token(&app, "ursula", "openid").await;
    let r = userinfo(&app, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::json!({"sub": id, "roles": []}));
    assert_eq!(r.header("cache-control"), Some("no-store"));

    let token = rp_token(&app, "ursula", "openid profile").await;
    let expected = serde_json::json!({"sub": id, "preferred_username": "ursula", "roles": []});
    assert_eq!(userinfo(&app, &token).await.json(), expected);
    // POST with the header, and POST with the token in the form body (RFC 6750 §2.2).
    let r = app
        .post_form_with(
            "/oauth/userinfo",
            &[],
            &[("authorization", &bearer(&token))],
        )
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, expected.clone()));
    let r = app
        .post_form("/oauth/userinfo", &[("access_token", &token)])
        .await;
    assert_eq!((r.status.as_u16(), r.json()), (200, expected));
    // Both at once is ambiguous.
    app.post_form_with(
        "/oauth/userinfo",
        &[("access_token", &token)],
        &[("authorization", &bearer(&token))],
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn userinfo_accepts_a_client_without_account_api_but_account_endpoints_do_not() {
    let app = oidc_app().await;
    app.sign_up("vera").await;
    let token = rp_token(&app, "vera", "openid").await;
    assert_eq!(userinfo(&app, &token).await.status, 200);
    assert_eq!(
        app.me(&token).await.status,
        401,
        "rp has account_api = false"
    );
}

#[tokio::test]
async fn userinfo_needs_the_openid_scope() {
    let app = oidc_app().await;
    app.sign_up("walt").await;
    let token = rp_token(&app, "walt", "read profile").await;
    let r = userinfo(&app, &token).await;
    r.assert_error(403, "insufficient_scope");
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"insufficient_scope\", scope=\"openid\"")
    );
}

#[tokio::test]
async fn userinfo_refuses_missing_invalid_expired_and_revoked_tokens() {
    let app = oidc_app().await;
    let r = app.get("/oauth/userinfo", &[]).await;
    r.assert_error(401, "unauthorized");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    assert_invalid_token(&userinfo(&app, "not-a-token").await);
    assert_invalid_token(&userinfo(&app, &"a".repeat(20_000)).await);

    app.sign_up("xena").await;
    let token = rp_token(&app, "xena", "openid").await;
    assert_eq!(userinfo(&app, &token).await.status, 200);
    // A changed signature.
    assert_invalid_token(&userinfo(&app, &tamper(&token)).await);
    // Revoked: the token session ends (RFC 7009 revocation of the access token).
    let r = app
        .post_form(
            "/oauth/revoke",
            &[("token", token.as_str()), ("client_id", "rp")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_invalid_token(&userinfo(&app, &token).await);
    // Expired.
    let token = rp_token(&app, "xena", "openid").await;
    app.clock.advance(time::Duration::minutes(16));
    assert_invalid_token(&userinfo(&app, &token).await);
}

#[tokio::test]
async fn userinfo_refuses_tokens_minted_for_a_cookie_session() {
    let app = oidc_app().await;
    app.sign_up("yann").await;
    let b = app.browser_login("yann").await;
    let r = app
        .call(
            "POST",
            "/v1/session/token",
            &[
                ("cookie", &b.cookie),
                ("origin", ORIGIN),
                ("x-csrf-token", &b.csrf),
            ],
            Some(&serde_json::json!({"client_id": "rp", "scope": "openid profile"})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let token = r.str_field("access_token");
    assert_invalid_token(&userinfo(&app, &token).await);
}

#[tokio::test]
async fn userinfo_refuses_bff_and_unconfigured_clients_tokens() {
    let app = oidc_app().await;
    app.sign_up("zoe").await;
    let token = rp_token(&app, "zoe", "openid").await;
    // The same claims (live token session, openid) under the BFF's reserved client id and
    // under a client that is not configured: signed with the server's own key.
    let claims = jwt_part(&token, 1);
    for client_id in ["latchkey-bff", "gone"] {
        let mut c: latchkey_tokens::AccessTokenClaims =
            serde_json::from_value(claims.clone()).expect("claims");
        c.client_id = client_id.into();
        let forged = app.state.keyring().sign(&c).expect("sign");
        assert_invalid_token(&userinfo(&app, &forged).await);
    }
}

#[tokio::test]
async fn userinfo_refuses_client_credentials_tokens() {
    let app = oidc_app().await;
    let token = client_token(&app, None).await;
    assert_invalid_token(&userinfo(&app, &token).await);
}

#[tokio::test]
async fn userinfo_is_open_to_listed_browser_origins_only() {
    let app = oidc_app().await;
    app.sign_up("abe").await;
    let token = rp_token(&app, "abe", "openid").await;
    let r = app
        .get(
            "/oauth/userinfo",
            &[("authorization", &bearer(&token)), ("origin", SPA_ORIGIN)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(SPA_ORIGIN));
    assert_eq!(r.header("access-control-allow-credentials"), None);
}

// ---------------------------------------------------------------------------------------------
// RP-Initiated Logout

/// An ID token as Latchkey issues them, signed in the test with the server's keyring (with the
/// algorithm of its access-token key, which the ring can always sign with).
fn id_token(app: &TestApp, sub: &str, aud: &str, sid: &str, exp_in_secs: i64) -> String {
    let now = now(app);
    let claims = IdTokenClaims {
        iss: "http://127.0.0.1:8080".into(),
        sub: sub.into(),
        aud: aud.into(),
        exp: now + exp_in_secs,
        iat: now - 3600,
        auth_time: now - 3600,
        nonce: Some("n-0S6_WzA2Mj".into()),
        sid: sid.into(),
        at_hash: None,
        azp: None,
    };
    let ring = app.state.keyring();
    let alg = ring.signing_key().algorithm();
    ring.sign_id_token(&claims, alg).expect("sign id token")
}

/// The test clock, epoch seconds.
fn now(app: &TestApp) -> i64 {
    app.state.clock.now().unix_timestamp()
}

/// A signed-up user logged in with a browser: (user id, browser).
async fn browser_user(app: &TestApp, username: &str) -> (String, Browser) {
    let user = app.sign_up(username).await;
    let b = app.browser_login(username).await;
    (user["id"].as_str().expect("id").to_string(), b)
}

fn logout_url(params: &[(&str, &str)]) -> String {
    format!(
        "/oauth/logout?{}",
        serde_urlencoded::to_string(params).expect("query")
    )
}

async fn logout_get(app: &TestApp, params: &[(&str, &str)], cookie: Option<&str>) -> Response {
    let url = logout_url(params);
    match cookie {
        Some(cookie) => app.get(&url, &[("cookie", cookie)]).await,
        None => app.get(&url, &[]).await,
    }
}

async fn session_alive(app: &TestApp, b: &Browser) -> bool {
    let r = app.get("/v1/session", &[("cookie", &b.cookie)]).await;
    match r.status.as_u16() {
        200 => true,
        401 => false,
        other => panic!("GET /v1/session: {other} {}", r.text()),
    }
}

fn assert_cookie_cleared(r: &Response) {
    let set_cookie = r.header("set-cookie").expect("Set-Cookie");
    assert!(
        set_cookie.starts_with("__Host-latchkey=;") && set_cookie.contains("Max-Age=0"),
        "{set_cookie}"
    );
}

fn assert_page(r: &Response, status: u16, text: &str) {
    assert_eq!(r.status.as_u16(), status, "{}", r.text());
    assert_eq!(r.header("location"), None, "never a redirect here");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.text().contains(text), "{}", r.text());
}

#[tokio::test]
async fn logout_with_an_id_token_hint_ends_the_session_and_redirects_with_state() {
    let app = oidc_app().await;
    let (user, b) = browser_user(&app, "lena").await;
    let hint = id_token(&app, &user, "rp", &b.sid, 900);
    let r = logout_get(
        &app,
        &[
            ("id_token_hint", &hint),
            ("post_logout_redirect_uri", BYE),
            ("state", "af0ifjsldkj&x=<1>"),
        ],
        Some(&b.cookie),
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:5173/bye?state=af0ifjsldkj%26x%3D%3C1%3E")
    );
    assert_cookie_cleared(&r);
    assert!(!session_alive(&app, &b).await);
    // The revocation is the ordinary one (reason logout): the session is on the feed.
    let feed = app.get("/v1/revocations", &[]).await.json();
    assert!(
        feed["revoked"]
            .as_array()
            .expect("revoked")
            .iter()
            .any(|e| e["sid"] == b.sid.as_str()),
        "{feed}"
    );
}

#[tokio::test]
async fn an_expired_hint_is_accepted_and_state_joins_an_existing_query() {
    let app = oidc_app().await;
    let (user, b) = browser_user(&app, "mona").await;
    let hint = id_token(&app, &user, "rp", &b.sid, -600);
    let r = logout_get(
        &app,
        &[
            ("id_token_hint", &hint),
            ("client_id", "rp"),
            ("post_logout_redirect_uri", BYE_WITH_QUERY),
            ("state", "s1"),
        ],
        Some(&b.cookie),
    )
    .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("https://rp.example.com/after?from=latchkey&state=s1")
    );
    assert!(!session_alive(&app, &b).await);
}

#[tokio::test]
async fn logout_without_a_redirect_shows_the_logged_out_page() {
    let app = oidc_app().await;
    let (user, b) = browser_user(&app, "nina").await;
    let hint = id_token(&app, &user, "rp", &b.sid, 900);
    let r = logout_get(&app, &[("id_token_hint", &hint)], Some(&b.cookie)).await;
    assert_page(&r, 200, "You are logged out");
    assert_cookie_cleared(&r);
    assert!(!session_alive(&app, &b).await);
}

#[tokio::test]
async fn the_hints_sid_names_the_session_to_end() {
    let app = oidc_app().await;
    let (user, b) = browser_user(&app, "olga").await;
    // Another browser of the same user stays logged in; no cookie comes with this request.
    let other = app.browser_login("olga").await;
    let hint = id_token(&app, &user, "rp", &b.sid, 900);
    let r = logout_get(&app, &[("id_token_hint", &hint)], None).await;
    assert_page(&r, 200, "You are logged out");
    assert_eq!(r.header("set-cookie"), None, "no cookie was sent");
    assert!(!session_alive(&app, &b).await);
    assert!(session_alive(&app, &other).await);
}

#[tokio::test]
async fn logout_without_a_hint_asks_for_confirmation_first() {
    let app = oidc_app().await;
    let (_, b) = browser_user(&app, "pia").await;
    // A forged cross-site GET (a link or an image) with the cookie: nothing happens yet.
    let r = logout_get(
        &app,
        &[
            ("client_id", "rp"),
            ("post_logout_redirect_uri", BYE),
            ("state", "\"><script>alert(1)</script>"),
        ],
        Some(&b.cookie),
    )
    .await;
    assert_page(&r, 200, "<form method=\"post\" action=\"/oauth/logout\">");
    assert_eq!(r.header("set-cookie"), None);
    assert!(session_alive(&app, &b).await);
    let page = r.text();
    assert!(page.contains(&format!("name=\"csrf_token\" value=\"{}\"", b.csrf)));
    assert!(page.contains("Relying &lt;Party&gt; asks you to log out."));
    assert!(!page.contains("<script>"), "state is escaped: {page}");
    assert!(page.contains("value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\""));
    // The redirect after the form post must pass the page's own form-action.
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(
        csp.contains("form-action 'self' http://127.0.0.1:5173;"),
        "{csp}"
    );

    // A POST without the CSRF token (e.g. an auto-submitted cross-site form): the same page.
    let r = app
        .post_form_with(
            "/oauth/logout",
            &[("client_id", "rp")],
            &[("cookie", &b.cookie)],
        )
        .await;
    assert_page(&r, 200, "Log out of Latchkey?");
    assert!(session_alive(&app, &b).await);
    // A wrong token, or a cross-site post even with the right one: refused, nothing changed.
    let wrong = latchkey_core::Secret::generate().to_text();
    app.post_form_with(
        "/oauth/logout",
        &[("csrf_token", wrong.as_str())],
        &[("cookie", &b.cookie), ("origin", ORIGIN)],
    )
    .await
    .assert_error(403, "csrf_failed");
    app.post_form_with(
        "/oauth/logout",
        &[("csrf_token", b.csrf.as_str())],
        &[("cookie", &b.cookie), ("origin", "https://evil.example")],
    )
    .await
    .assert_error(403, "csrf_failed");
    app.post_form_with(
        "/oauth/logout",
        &[("csrf_token", b.csrf.as_str())],
        &[("cookie", &b.cookie), ("sec-fetch-site", "cross-site")],
    )
    .await
    .assert_error(403, "csrf_failed");
    // A GET never confirms, even with the token in the query.
    let r = logout_get(&app, &[("csrf_token", &b.csrf)], Some(&b.cookie)).await;
    assert_page(&r, 200, "Log out of Latchkey?");
    assert!(session_alive(&app, &b).await);

    // The user confirms on Latchkey's page: logged out, then sent back with state.
    let r = app
        .post_form_with(
            "/oauth/logout",
            &[
                ("csrf_token", b.csrf.as_str()),
                ("client_id", "rp"),
                ("post_logout_redirect_uri", BYE),
                ("state", "s2"),
            ],
            &[
                ("cookie", &b.cookie),
                ("origin", ORIGIN),
                ("sec-fetch-site", "same-origin"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.text());
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:5173/bye?state=s2")
    );
    assert_cookie_cleared(&r);
    assert!(!session_alive(&app, &b).await);
}

#[tokio::test]
async fn a_hint_for_another_user_does_not_log_the_browser_out_silently() {
    let app = oidc_app().await;
    let (_, b) = browser_user(&app, "quinn").await;
    let (mallory, m) = browser_user(&app, "mallory").await;
    // Mallory's own (valid) ID token, sent through Quinn's browser.
    let hint = id_token(&app, &mallory, "rp", &m.sid, 900);
    let r = logout_get(&app, &[("id_token_hint", &hint)], Some(&b.cookie)).await;
    assert_page(&r, 200, "Log out of Latchkey?");
    assert!(session_alive(&app, &b).await);
    assert!(
        session_alive(&app, &m).await,
        "nothing is done before confirmation"
    );
}

#[tokio::test]
async fn without_a_session_there_is_nothing_to_confirm() {
    let app = oidc_app().await;
    let r = logout_get(
        &app,
        &[
            ("client_id", "rp"),
            ("post_logout_redirect_uri", BYE),
            ("state", "s3"),
        ],
        None,
    )
    .await;
    assert_eq!(r.status, 302);
    assert_eq!(
        r.header("location"),
        Some("http://127.0.0.1:5173/bye?state=s3")
    );
    // A dead or malformed cookie is cleared.
    let r = logout_get(&app, &[], Some("__Host-latchkey=garbage")).await;
    assert_page(&r, 200, "You are logged out");
    assert_cookie_cleared(&r);
}

#[tokio::test]
async fn logout_never_redirects_to_an_unregistered_uri() {
    let app = oidc_app().await;
    let attempts = [
        "https://evil.example/bye",
        "http://127.0.0.1:5173/bye/",
        "http://127.0.0.1:5173/bye?state=x",
        "http://127.0.0.1:5173/BYE",
        "HTTP://127.0.0.1:5173/bye",
        "http://127.0.0.1:5173/bye#frag",
        "http://127.0.0.1:5173/bye/../evil",
        "http://127.0.0.1:5173.evil.example/bye",
        "//evil.example/bye",
        "javascript:alert(1)",
        // Registered, but for another client.
        OTHER_BYE,
    ];
    for (i, uri) in attempts.into_iter().enumerate() {
        let (user, b) = browser_user(&app, &format!("redirect{i}")).await;
        let hint = id_token(&app, &user, "rp", &b.sid, 900);
        // Named by client_id, by the hint's audience, or by both.
        let by_client = [("client_id", "rp"), ("post_logout_redirect_uri", uri)];
        let by_hint = [
            ("id_token_hint", hint.as_str()),
            ("post_logout_redirect_uri", uri),
        ];
        let r = logout_get(&app, &by_client, None).await;
        assert_page(&r, 200, "not registered");
        let r = logout_get(&app, &by_hint, Some(&b.cookie)).await;
        assert_page(&r, 200, "not registered");
        // The logout itself happened (a valid hint for this browser's user).
        assert!(!session_alive(&app, &b).await, "{uri}");
    }
    // No client named at all: a registered URI is still not used.
    let r = logout_get(&app, &[("post_logout_redirect_uri", BYE)], None).await;
    assert_page(&r, 200, "not registered");
}

#[tokio::test]
async fn logout_refuses_bad_hints_and_unknown_or_mismatched_clients() {
    let app = oidc_app().await;
    let (user, b) = browser_user(&app, "rita").await;
    let ok = id_token(&app, &user, "rp", &b.sid, 900);
    let tampered = tamper(&ok);
    let unknown_aud = id_token(&app, &user, "nobody", &b.sid, 900);
    let wrong_iss = {
        let now = now(&app);
        let claims = IdTokenClaims {
            iss: "https://evil.example".into(),
            sub: user.clone(),
            aud: "rp".into(),
            exp: now + 900,
            iat: now,
            auth_time: now,
            nonce: None,
            sid: b.sid.clone(),
            at_hash: None,
            azp: None,
        };
        let ring = app.state.keyring();
        ring.sign_id_token(&claims, ring.signing_key().algorithm())
            .expect("sign")
    };
    // An access token is not an ID token.
    let access = rp_token(&app, "rita", "openid").await;
    for hint in [
        &tampered,
        &unknown_aud,
        &wrong_iss,
        &access,
        &"x.y.z".to_string(),
    ] {
        logout_get(
            &app,
            &[("id_token_hint", hint), ("post_logout_redirect_uri", BYE)],
            Some(&b.cookie),
        )
        .await
        .assert_error(400, "invalid_request");
    }
    // The hint was issued to rp, client_id says other: refused, not redirected to other's URI.
    logout_get(
        &app,
        &[
            ("id_token_hint", &ok),
            ("client_id", "other"),
            ("post_logout_redirect_uri", OTHER_BYE),
        ],
        Some(&b.cookie),
    )
    .await
    .assert_error(400, "invalid_request");
    logout_get(
        &app,
        &[("client_id", "nobody"), ("post_logout_redirect_uri", BYE)],
        Some(&b.cookie),
    )
    .await
    .assert_error(400, "invalid_request");
    assert!(
        session_alive(&app, &b).await,
        "nothing ended on a refused request"
    );
}

#[tokio::test]
async fn logout_parameters_are_bounded() {
    let app = oidc_app().await;
    let long = |n: usize| "a".repeat(n);
    for (name, value) in [
        ("id_token_hint", long(8193)),
        ("client_id", long(129)),
        ("post_logout_redirect_uri", long(2001)),
        ("state", long(1025)),
        ("logout_hint", long(1025)),
        ("ui_locales", long(1025)),
    ] {
        logout_get(&app, &[(name, &value)], None)
            .await
            .assert_error(400, "invalid_request");
    }
    app.post_form("/oauth/logout", &[("csrf_token", &long(129))])
        .await
        .assert_error(400, "invalid_request");
    // A repeated parameter, bad percent-encoding, a body of the wrong type.
    app.get("/oauth/logout?state=a&state=b", &[])
        .await
        .assert_error(400, "invalid_request");
    app.post_raw("/oauth/logout", "text/plain", b"state=x".to_vec(), &[])
        .await
        .assert_error(415, "unsupported_media_type");
    // Unknown parameters are ignored.
    let r = logout_get(&app, &[("prompt", "none")], None).await;
    assert_page(&r, 200, "You are logged out");
}

// ---------------------------------------------------------------------------------------------
// client_credentials

async fn client_credentials(app: &TestApp, params: &[(&str, &str)]) -> Response {
    let mut form = vec![("grant_type", "client_credentials")];
    form.extend_from_slice(params);
    app.post_form("/oauth/token", &form).await
}

/// A client_credentials token of `svc`.
async fn client_token(app: &TestApp, scope: Option<&str>) -> String {
    let mut params = vec![("client_id", "svc"), ("client_secret", SVC_SECRET)];
    if let Some(scope) = scope {
        params.push(("scope", scope));
    }
    let r = client_credentials(app, &params).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.str_field("access_token")
}

#[tokio::test]
async fn client_credentials_issues_an_access_token_for_the_client_itself() {
    let app = oidc_app().await;
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("svc:{SVC_SECRET}")
        )
    );
    let r = app
        .post_form_with(
            "/oauth/token",
            &[("grant_type", "client_credentials")],
            &[("authorization", &basic)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("pragma"), Some("no-cache"));
    let body = r.json();
    let mut keys: Vec<&str> = body
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(keys, ["access_token", "expires_in", "scope", "token_type"]);
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "jobs:read jobs:write");
    let token = body["access_token"].as_str().expect("token");
    assert_eq!(jwt_part(token, 0)["typ"], "at+jwt");
    let claims = jwt_part(token, 1);
    assert_eq!(claims["sub"], "svc");
    assert_eq!(claims["client_id"], "svc");
    assert_eq!(claims["aud"], "jobs");
    assert_eq!(claims["scope"], "jobs:read jobs:write");
    // A fresh sid that names no session.
    let sid = claims["sid"].as_str().expect("sid");
    let sid = latchkey_core::SessionId::parse(sid).expect("a session id");
    assert_eq!(app.store.session(sid).await.expect("store"), None);
    let other = client_token(&app, None).await;
    assert_ne!(jwt_part(&other, 1)["sid"], claims["sid"]);

    // `scope` narrows; a scope the client lacks, or an OIDC scope (no user), is invalid_scope.
    let narrowed = client_token(&app, Some("jobs:read")).await;
    assert_eq!(jwt_part(&narrowed, 1)["scope"], "jobs:read");
    for scope in ["admin", "jobs:read openid", "profile"] {
        client_credentials(
            &app,
            &[
                ("client_id", "svc"),
                ("client_secret", SVC_SECRET),
                ("scope", scope),
            ],
        )
        .await
        .assert_error(400, "invalid_scope");
    }
}

#[tokio::test]
async fn client_credentials_only_for_confidential_clients_that_list_it() {
    let app = oidc_app().await;
    // Confidential, but without the grant in its grant_types.
    client_credentials(
        &app,
        &[("client_id", "backend"), ("client_secret", BACKEND_SECRET)],
    )
    .await
    .assert_error(400, "unauthorized_client");
    // Public clients (the config refuses the grant for them, so they can never list it).
    client_credentials(&app, &[("client_id", "spa")])
        .await
        .assert_error(400, "unauthorized_client");
    // Bad or missing credentials.
    client_credentials(
        &app,
        &[
            ("client_id", "svc"),
            ("client_secret", "wrong-secret-0123456789"),
        ],
    )
    .await
    .assert_error(401, "invalid_client");
    client_credentials(&app, &[("client_id", "svc")])
        .await
        .assert_error(401, "invalid_client");
    client_credentials(&app, &[])
        .await
        .assert_error(401, "invalid_client");
}

#[tokio::test]
async fn client_tokens_are_refused_by_the_account_endpoints() {
    let app = oidc_app().await;
    let token = client_token(&app, None).await;
    let auth = bearer(&token);
    for (method, path, body) in [
        ("GET", "/v1/me", None),
        ("GET", "/v1/sessions", None),
        ("POST", "/v1/sessions/revoke-others", None),
        (
            "POST",
            "/v1/password",
            Some(serde_json::json!({"current_password": "x", "new_password": "yyyyyyyyyyyyyyyy"})),
        ),
    ] {
        let r = app
            .call(method, path, &[("authorization", &auth)], body.as_ref())
            .await;
        r.assert_error(401, "unauthorized");
    }
}

/// RFC 7662 introspection by the confidential test client.
async fn introspect(app: &TestApp, token: &str) -> Value {
    app.post_form(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_id", "backend"),
            ("client_secret", BACKEND_SECRET),
        ],
    )
    .await
    .json()
}

#[tokio::test]
async fn client_tokens_introspect_active_until_they_expire() {
    let app = oidc_app().await;
    let token = client_token(&app, Some("jobs:read")).await;
    let body = introspect(&app, &token).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["sub"], "svc");
    assert_eq!(body["client_id"], "svc");
    assert_eq!(body["scope"], "jobs:read");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["sid"], jwt_part(&token, 1)["sid"]);
    // A user's token whose session was never created is not mistaken for a client token.
    let claims = jwt_part(&token, 1);
    let mut c: latchkey_tokens::AccessTokenClaims = serde_json::from_value(claims).expect("claims");
    c.sub = uuid::Uuid::new_v4().to_string();
    let orphan = app.state.keyring().sign(&c).expect("sign");
    assert_eq!(
        introspect(&app, &orphan).await,
        serde_json::json!({"active": false})
    );
    // Revocation cannot reach it (no session): RFC 7009 still answers 200.
    let r = app
        .post_form(
            "/oauth/revoke",
            &[
                ("token", token.as_str()),
                ("client_id", "svc"),
                ("client_secret", SVC_SECRET),
            ],
        )
        .await;
    assert_eq!(r.status, 200);
    app.clock.advance(time::Duration::minutes(16));
    assert_eq!(
        introspect(&app, &token).await,
        serde_json::json!({"active": false})
    );
}

#[tokio::test]
async fn forward_auth_accepts_client_tokens_for_their_audience() {
    let app = oidc_app().await;
    let token = client_token(&app, None).await;
    let auth = bearer(&token);
    let r = app.get("/v1/authorize", &[("authorization", &auth)]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-latchkey-user"), Some("svc"));
    assert_eq!(r.header("x-latchkey-client"), Some("svc"));
    assert_eq!(r.header("x-latchkey-username"), None);
    let sid = jwt_part(&token, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    assert_eq!(r.header("x-latchkey-session"), Some(sid.as_str()));
    let r = app
        .get("/v1/authorize?aud=jobs", &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .get("/v1/authorize?aud=api", &[("authorization", &auth)])
        .await;
    assert_eq!(r.status, 401);
    // A user's token still gets the user headers and no client header.
    app.sign_up("sam").await;
    let user_token = rp_token(&app, "sam", "read").await;
    let r = app
        .get("/v1/authorize", &[("authorization", &bearer(&user_token))])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-latchkey-username"), Some("sam"));
    assert_eq!(r.header("x-latchkey-client"), None);
}

#[tokio::test]
async fn latchkey_verify_accepts_client_tokens() {
    let server = crate::socket::start(oidc_config()).await;
    let r = reqwest::Client::new()
        .post(format!("{}/oauth/token", server.base))
        .basic_auth("svc", Some(SVC_SECRET))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("token request");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    let token = body["access_token"].as_str().expect("token");
    let mut config = latchkey_verify::VerifierConfig::new("http://127.0.0.1:8080", "jobs");
    config.jwks_url = Some(format!("{}/.well-known/jwks.json", server.base));
    config.feed_url = Some(format!("{}/v1/revocations", server.base));
    let verifier = latchkey_verify::Verifier::start(config)
        .await
        .expect("verifier starts");
    let claims = verifier.verify(token).await.expect("accepted");
    assert_eq!(
        (claims.sub.as_str(), claims.client_id.as_str()),
        ("svc", "svc")
    );
}

// ---------------------------------------------------------------------------------------------
// Fail closed

async fn flaky_oidc_app() -> (TestApp, std::sync::Arc<latchkey_store::testing::FlakyStore>) {
    let flaky = std::sync::Arc::new(latchkey_store::testing::FlakyStore::new(
        std::sync::Arc::new(latchkey_store::MemoryStore::new()),
    ));
    let app = TestApp::build(oidc_config(), flaky.clone(), None).await;
    (app, flaky)
}

#[tokio::test]
async fn userinfo_and_logout_fail_closed_when_the_store_is_down() {
    let (app, flaky) = flaky_oidc_app().await;
    let (user, b) = browser_user(&app, "flo").await;
    let token = rp_token(&app, "flo", "openid").await;
    let hint = id_token(&app, &user, "rp", &b.sid, 900);

    flaky.fail_reads(true);
    userinfo(&app, &token)
        .await
        .assert_error(503, "unavailable");
    // Never "You are logged out" (nor a redirect) when the session could not be ended.
    logout_get(
        &app,
        &[("id_token_hint", &hint), ("post_logout_redirect_uri", BYE)],
        Some(&b.cookie),
    )
    .await
    .assert_error(503, "unavailable");
    flaky.fail_reads(false);

    flaky.fail_writes(true);
    let r = logout_get(
        &app,
        &[("id_token_hint", &hint), ("post_logout_redirect_uri", BYE)],
        Some(&b.cookie),
    )
    .await;
    r.assert_error(503, "unavailable");
    assert_eq!(r.header("location"), None);
    flaky.fail_writes(false);
    assert!(session_alive(&app, &b).await);
    assert_eq!(userinfo(&app, &token).await.status, 200);

    // Retried once the store is back: done.
    let r = logout_get(
        &app,
        &[("id_token_hint", &hint), ("post_logout_redirect_uri", BYE)],
        Some(&b.cookie),
    )
    .await;
    assert_eq!(r.status, 302);
    assert!(!session_alive(&app, &b).await);
}

/// API.md: userinfo returns the user's roles as they are now (not the token's older claim).
#[tokio::test]
async fn userinfo_returns_the_users_current_roles() {
    let app = oidc_app().await;
    let user = app.sign_up("rhea").await;
    let id = latchkey_core::UserId::parse(user["id"].as_str().expect("id")).expect("uuid");
    let token = rp_token(&app, "rhea", "openid").await;
    assert_eq!(
        userinfo(&app, &token).await.json()["roles"],
        serde_json::json!([])
    );
    let roles = vec!["editor".to_string(), "reader".to_string()];
    app.store
        .set_user_roles(
            id,
            &roles,
            app.state.clock.now(),
            time::Duration::minutes(15),
        )
        .await
        .expect("set roles")
        .expect("user exists");
    let r = userinfo(&app, &token).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["roles"], serde_json::json!(["editor", "reader"]));
}

/// A client_credentials token names no user, so it never carries `openid`/`profile`, even for a
/// confidential client that lists them among its scopes (asked for or not).
#[tokio::test]
async fn client_credentials_never_grant_the_oidc_scopes() {
    let mut config = oidc_config();
    config.clients.push(ClientConfig {
        id: "svc-oidc".into(),
        kind: ClientKind::Confidential,
        secret: Some(Redacted(SVC_SECRET.into())),
        audience: "jobs".into(),
        scopes: grants(&["openid", "profile", "jobs:read"]),
        grant_types: grants(&["client_credentials"]),
        ..ClientConfig::default()
    });
    let app = TestApp::with_config(config).await;
    let form = |scope: Option<&'static str>| {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("client_id", "svc-oidc"),
            ("client_secret", SVC_SECRET),
        ];
        if let Some(s) = scope {
            f.push(("scope", s));
        }
        f
    };
    let r = app.post_form("/oauth/token", &form(None)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["scope"], "jobs:read");
    for scope in ["openid", "jobs:read profile"] {
        app.post_form("/oauth/token", &form(Some(scope)))
            .await
            .assert_error(400, "invalid_scope");
    }
}
