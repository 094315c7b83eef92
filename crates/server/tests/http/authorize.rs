//! Standard login: `GET /oauth/authorize` and the authorization code grant (PKCE S256, OIDC ID
//! tokens, single-use codes, child token sessions), DESIGN invariant 8.
use crate::harness::{Browser, ORIGIN, Response, TestApp, grants, jwt_part, test_config};
use axum::http::StatusCode;
use latchkey_core::{Clock, SessionId};
use latchkey_server::config::{ClientConfig, ClientKind, Config, Redacted};
use latchkey_tokens::{IdTokenValidation, JwkSet, PublicKeySet};
use std::collections::HashMap;

const CB: &str = "https://app.example/cb";
const CB2: &str = "http://127.0.0.1:9000/cb";
const WEB_CB: &str = "https://web.example/cb";
const WEB_SECRET: &str = "web-secret-0123456789abcdef";
/// RFC 7636 Appendix B.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

fn config() -> Config {
    let mut c = test_config();
    c.clients[0].redirect_uris = vec![CB.into(), CB2.into()];
    c.clients[1].redirect_uris = vec!["https://backend.example/cb".into()];
    let public = |id: &str, uri: &str| ClientConfig {
        id: id.into(),
        audience: "api".into(),
        scopes: vec!["read".into()],
        grant_types: grants(&["authorization_code", "refresh_token"]),
        redirect_uris: vec![uri.into()],
        ..ClientConfig::default()
    };
    c.clients.push(ClientConfig {
        kind: ClientKind::Confidential,
        secret: Some(Redacted(WEB_SECRET.into())),
        ..public("web", WEB_CB)
    });
    c.clients.push(public("other", "https://other.example/cb"));
    c.clients.push(ClientConfig {
        first_party: false,
        ..public("third", "https://third.example/cb")
    });
    c
}

/// The query of a good request by `spa`, with `extra` replacing or adding parameters (an
/// empty value removes one).
fn spa_query(extra: &[(&str, &str)]) -> String {
    let mut params: Vec<(String, String)> = [
        ("response_type", "code"),
        ("client_id", "spa"),
        ("redirect_uri", CB),
        ("scope", "openid read"),
        ("state", "st-1"),
        ("nonce", "n-1"),
        ("code_challenge", CHALLENGE),
        ("code_challenge_method", "S256"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        params.retain(|(name, _)| name != k);
        if !v.is_empty() {
            params.push((k.to_string(), v.to_string()));
        }
    }
    serde_urlencoded::to_string(&params).expect("query")
}

async fn authorize(app: &TestApp, browser: Option<&Browser>, query: &str) -> Response {
    let path = format!("/oauth/authorize?{query}");
    match browser {
        Some(b) => app.get(&path, &[("cookie", &b.cookie)]).await,
        None => app.get(&path, &[]).await,
    }
}

/// The query parameters of a 302 to `base`.
fn redirected_to(r: &Response, base: &str) -> HashMap<String, String> {
    assert_eq!(r.status, StatusCode::FOUND, "{}", r.text());
    let location = r.header("location").expect("Location");
    let (at, query) = location.split_once('?').expect("a query");
    assert_eq!(at, base, "{location}");
    serde_urlencoded::from_str(query).expect("query")
}

/// A 400 page at Latchkey, never a redirect.
fn assert_page(r: &Response) {
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert!(r.header("location").is_none(), "never a redirect");
    assert!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "a page"
    );
}

/// An error redirect to the spa's callback, with `state` and `iss`.
fn assert_redirect_error(app: &TestApp, r: &Response, error: &str) {
    let p = redirected_to(r, CB);
    assert_eq!(p["error"], error, "{p:?}");
    assert!(p.get("error_description").is_some_and(|d| !d.is_empty()));
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], app.state.issuer);
    assert!(!p.contains_key("code"));
}

async fn signed_in(app: &TestApp, name: &str) -> Browser {
    app.sign_up(name).await;
    app.browser_login(name).await
}

/// A code for the signed-in browser (the good spa request plus `extra`).
async fn code_for(app: &TestApp, b: &Browser, extra: &[(&str, &str)]) -> String {
    let r = authorize(app, Some(b), &spa_query(extra)).await;
    let p = redirected_to(&r, CB);
    assert_eq!(p["state"], "st-1");
    assert_eq!(p["iss"], app.state.issuer);
    p["code"].clone()
}

async fn exchange(app: &TestApp, fields: &[(&str, &str)]) -> Response {
    let mut form = vec![("grant_type", "authorization_code")];
    form.extend_from_slice(fields);
    app.post_form("/oauth/token", &form).await
}

async fn spa_exchange(app: &TestApp, code: &str) -> Response {
    exchange(
        app,
        &[
            ("code", code),
            ("redirect_uri", CB),
            ("client_id", "spa"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await
}

async fn jwks(app: &TestApp) -> PublicKeySet {
    let r = app.get("/.well-known/jwks.json", &[]).await;
    let set: JwkSet = serde_json::from_slice(&r.body).expect("JWKS");
    PublicKeySet::from_jwks(&set).expect("keys")
}

async fn happy_path(app: TestApp) {
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let r = spa_exchange(&app, &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "openid read");
    let access = body["access_token"].as_str().expect("access").to_string();
    let refresh = body["refresh_token"].as_str().expect("refresh").to_string();
    let id_token = body["id_token"].as_str().expect("id_token").to_string();

    // The ID token verifies against the published JWKS, with nonce and at_hash.
    assert_eq!(jwt_part(&id_token, 0)["alg"], "RS256");
    let now = app.clock.now().unix_timestamp();
    let validation = IdTokenValidation {
        nonce: Some("n-1".into()),
        access_token: Some(access.clone()),
        ..IdTokenValidation::new(app.state.issuer.clone(), "spa", now)
    };
    let claims = jwks(&app)
        .await
        .verify_id_token(&id_token, &validation)
        .expect("ID token verifies");
    assert_eq!(claims.sid, b.sid, "sid is the cookie session");
    assert_eq!(claims.aud, "spa");
    assert_eq!(claims.nonce.as_deref(), Some("n-1"));
    assert!(claims.auth_time <= now && claims.exp > now);
    let wrong_nonce = IdTokenValidation {
        nonce: Some("other".into()),
        ..validation.clone()
    };
    assert!(
        jwks(&app)
            .await
            .verify_id_token(&id_token, &wrong_nonce)
            .is_err()
    );

    // The access token: a new token session, child of the cookie session.
    let at = jwt_part(&access, 1);
    assert_eq!(at["sub"], claims.sub);
    assert_eq!(at["client_id"], "spa");
    let sid = SessionId::parse(at["sid"].as_str().expect("sid")).expect("uuid");
    assert_ne!(sid.to_string(), b.sid);
    let session = app
        .store
        .session(sid)
        .await
        .expect("store")
        .expect("session");
    assert_eq!(
        session.parent_id.map(|p| p.to_string()),
        Some(b.sid.clone())
    );
    assert_eq!(app.me(&access).await.status, StatusCode::OK);
    // It rotates like any token session.
    let r = app.refresh(&refresh).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
}

#[tokio::test]
async fn the_code_flow_with_pkce_issues_tokens_and_a_verifiable_id_token() {
    happy_path(TestApp::with_config(config()).await).await;
}

#[tokio::test]
async fn the_code_flow_works_on_sqlite() {
    happy_path(TestApp::sqlite(config()).await).await;
}

#[tokio::test]
async fn without_openid_there_is_no_id_token() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[("scope", "read")]).await;
    let r = spa_exchange(&app, &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json().get("id_token").is_none());
    assert_eq!(r.json()["scope"], "read");
}

#[tokio::test]
async fn redirect_uri_mismatches_are_a_page_never_a_redirect() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    for uri in [
        "https://app.example/cb/",
        "https://app.example/c",
        "https://app.example/cb/more",
        "https://app.example:8443/cb",
        "https://APP.example/cb",
        "https://app.example/CB",
        "https://app.example/cb#frag",
        "https://app.example/cb?x=1",
        "http://app.example/cb",
        "http://127.0.0.1:9001/cb",
        "https://evil.example/cb",
        "",
    ] {
        let query = if uri.is_empty() {
            // Omitted, with two registered: cannot tell which.
            spa_query(&[("redirect_uri", "")])
        } else {
            spa_query(&[("redirect_uri", uri)])
        };
        let r = authorize(&app, Some(&b), &query).await;
        assert_page(&r);
    }
    // Unknown, missing or doubled client, doubled redirect URI.
    for query in [
        spa_query(&[("client_id", "nobody")]),
        spa_query(&[("client_id", "")]),
        format!("{}&client_id=spa", spa_query(&[])),
        format!(
            "{}&redirect_uri={}",
            spa_query(&[]),
            "https%3A%2F%2Fevil.example%2Fcb"
        ),
        "%zz=%%".to_string(),
        String::new(),
    ] {
        let r = authorize(&app, Some(&b), &query).await;
        assert_page(&r);
    }
    // The other registered URI, exactly, is fine; a single registered URI may be omitted.
    let r = authorize(&app, Some(&b), &spa_query(&[("redirect_uri", CB2)])).await;
    assert!(redirected_to(&r, CB2).contains_key("code"));
    let query = "response_type=code&client_id=web&state=s";
    let r = authorize(&app, Some(&b), query).await;
    assert!(redirected_to(&r, WEB_CB).contains_key("code"));
}

#[tokio::test]
async fn a_replayed_code_is_refused_and_revokes_what_its_first_use_issued() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let first = spa_exchange(&app, &code).await;
    assert_eq!(first.status, StatusCode::OK);
    let access = first.str_field("access_token");
    let refresh = first.str_field("refresh_token");
    let again = spa_exchange(&app, &code).await;
    let body = again.assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .is_some_and(|d| d.contains("already used"))
    );
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.me(&access).await.status, StatusCode::UNAUTHORIZED);
    // The cookie session itself is untouched.
    let me = app.as_browser(&b, "GET", "/v1/session", None).await;
    assert_eq!(me.status, StatusCode::OK);
}

#[tokio::test]
async fn the_verifier_must_match_and_a_failed_attempt_spends_the_code() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let wrong = "x".repeat(43);
    let r = exchange(
        &app,
        &[
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "spa"),
            ("code_verifier", &wrong),
        ],
    )
    .await;
    r.assert_error(400, "invalid_grant");
    spa_exchange(&app, &code)
        .await
        .assert_error(400, "invalid_grant");

    let code = code_for(&app, &b, &[]).await;
    let r = exchange(
        &app,
        &[("code", &code), ("redirect_uri", CB), ("client_id", "spa")],
    )
    .await;
    r.assert_error(400, "invalid_grant");

    // Malformed verifiers are refused before the code is looked at.
    let code = code_for(&app, &b, &[]).await;
    for bad in ["short", &"a".repeat(129), &format!("{}!", &VERIFIER[..43])] {
        let r = exchange(
            &app,
            &[
                ("code", &code),
                ("redirect_uri", CB),
                ("client_id", "spa"),
                ("code_verifier", bad),
            ],
        )
        .await;
        r.assert_error(400, "invalid_request");
    }
    assert_eq!(spa_exchange(&app, &code).await.status, StatusCode::OK);

    // Unknown, malformed or missing codes.
    spa_exchange(&app, "not-a-code")
        .await
        .assert_error(400, "invalid_grant");
    let unknown = latchkey_core::Secret::generate().to_text();
    spa_exchange(&app, &unknown)
        .await
        .assert_error(400, "invalid_grant");
    exchange(&app, &[("client_id", "spa"), ("code_verifier", VERIFIER)])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test]
async fn public_clients_need_pkce_with_s256() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    for extra in [
        vec![("code_challenge", ""), ("code_challenge_method", "")],
        vec![("code_challenge_method", "plain")],
        vec![("code_challenge_method", "")],
        vec![("code_challenge", "")],
        vec![("code_challenge", "tooshort")],
    ] {
        let r = authorize(&app, Some(&b), &spa_query(&extra)).await;
        assert_redirect_error(&app, &r, "invalid_request");
    }
}

#[tokio::test]
async fn confidential_clients_may_omit_pkce_but_what_they_send_is_enforced() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let basic = |code: String| {
        serde_urlencoded::to_string([
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", WEB_CB),
            ("client_id", "web"),
            ("client_secret", WEB_SECRET),
        ])
        .expect("form")
    };
    let query = format!(
        "response_type=code&client_id=web&redirect_uri={}&state=s",
        urlenc(WEB_CB)
    );
    let code = redirected_to(&authorize(&app, Some(&b), &query).await, WEB_CB)["code"].clone();
    let r = app
        .post_raw(
            "/oauth/token",
            "application/x-www-form-urlencoded",
            basic(code).into_bytes(),
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // A verifier for a code issued without a challenge: refused (no downgrade).
    let code = redirected_to(&authorize(&app, Some(&b), &query).await, WEB_CB)["code"].clone();
    let r = exchange(
        &app,
        &[
            ("code", &code),
            ("redirect_uri", WEB_CB),
            ("client_id", "web"),
            ("client_secret", WEB_SECRET),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    r.assert_error(400, "invalid_grant");
    // With a challenge, the verifier is required.
    let with = format!("{query}&code_challenge={CHALLENGE}&code_challenge_method=S256");
    let code = redirected_to(&authorize(&app, Some(&b), &with).await, WEB_CB)["code"].clone();
    let r = app
        .post_raw(
            "/oauth/token",
            "application/x-www-form-urlencoded",
            basic(code).into_bytes(),
            &[],
        )
        .await;
    r.assert_error(400, "invalid_grant");
}

fn urlenc(s: &str) -> String {
    serde_urlencoded::to_string([("v", s)]).expect("enc")[2..].to_string()
}

#[tokio::test]
async fn other_errors_redirect_with_state_and_iss() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let long_nonce = "n".repeat(513);
    let long_hint = "h".repeat(257);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("response_type", "token")],
            "unsupported_response_type",
        ),
        (vec![("response_type", "")], "invalid_request"),
        (vec![("scope", "openid admin")], "invalid_scope"),
        (vec![("scope", "read\u{7f}")], "invalid_request"),
        (vec![("prompt", "consent")], "invalid_request"),
        (vec![("max_age", "-1")], "invalid_request"),
        (vec![("max_age", "99999999999")], "invalid_request"),
        (vec![("nonce", &long_nonce)], "invalid_request"),
        (vec![("login_hint", &long_hint)], "invalid_request"),
    ];
    for (extra, error) in cases {
        let r = authorize(&app, Some(&b), &spa_query(&extra)).await;
        assert_redirect_error(&app, &r, error);
    }
    // Any parameter given twice.
    for dup in [
        "state=st-1",
        "scope=read",
        "nonce=x",
        "response_type=code",
        "code_challenge_method=S256",
    ] {
        let r = authorize(&app, Some(&b), &format!("{}&{dup}", spa_query(&[]))).await;
        let p = redirected_to(&r, CB);
        assert_eq!(p["error"], "invalid_request", "{dup}");
    }
    // A malformed state is not echoed.
    let r = authorize(&app, Some(&b), &spa_query(&[("state", &"s".repeat(600))])).await;
    let p = redirected_to(&r, CB);
    assert_eq!(p["error"], "invalid_request");
    assert!(!p.contains_key("state"));
    // A client without the grant.
    let query = "response_type=code&client_id=backend&state=st-1";
    let p = redirected_to(
        &authorize(&app, Some(&b), query).await,
        "https://backend.example/cb",
    );
    assert_eq!(p["error"], "unauthorized_client");
    // A third-party client: no consent page yet.
    let query = format!(
        "response_type=code&client_id=third&state=st-1&code_challenge={CHALLENGE}&code_challenge_method=S256"
    );
    let p = redirected_to(
        &authorize(&app, Some(&b), &query).await,
        "https://third.example/cb",
    );
    assert_eq!(p["error"], "access_denied");
    let p = redirected_to(
        &authorize(&app, Some(&b), &format!("{query}&prompt=none")).await,
        "https://third.example/cb",
    );
    assert_eq!(p["error"], "consent_required");
}

#[tokio::test]
async fn without_a_session_the_user_goes_to_login_and_comes_back() {
    let app = TestApp::with_config(config()).await;
    app.sign_up("alice").await;
    let query = spa_query(&[("login_hint", "alice")]);
    let r = authorize(&app, None, &query).await;
    let p = redirected_to(&r, "/login");
    assert_eq!(p["login_hint"], "alice");
    let back = p["return_to"].clone();
    assert!(back.starts_with("/oauth/authorize?"), "{back}");
    // The login page accepts it.
    let page = app
        .get(
            &format!(
                "/login?{}",
                r.header("location")
                    .expect("loc")
                    .split_once('?')
                    .expect("q")
                    .1
            ),
            &[],
        )
        .await;
    assert_eq!(page.status, StatusCode::OK);
    // After login, the same request yields a code.
    let b = app.browser_login("alice").await;
    let r = app.get(&back, &[("cookie", &b.cookie)]).await;
    assert!(redirected_to(&r, CB).contains_key("code"));
    // prompt=none without a session: login_required.
    let r = authorize(&app, None, &spa_query(&[("prompt", "none")])).await;
    assert_redirect_error(&app, &r, "login_required");
    // A cookie that is not a live session counts as none.
    let r = app
        .get(
            &format!("/oauth/authorize?{}", spa_query(&[("prompt", "none")])),
            &[("cookie", "__Host-latchkey=garbage")],
        )
        .await;
    assert_redirect_error(&app, &r, "login_required");
}

#[tokio::test]
async fn prompt_login_and_max_age_ask_for_a_fresh_login() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let r = authorize(&app, Some(&b), &spa_query(&[("prompt", "login")])).await;
    let p = redirected_to(&r, "/login");
    let back = p["return_to"].clone();
    assert!(
        !back.contains("prompt"),
        "the way back does not ask again: {back}"
    );
    let fresh = app.browser_login("alice").await;
    let r = app.get(&back, &[("cookie", &fresh.cookie)]).await;
    assert!(redirected_to(&r, CB).contains_key("code"));

    app.clock.advance(time::Duration::seconds(120));
    let r = authorize(&app, Some(&b), &spa_query(&[("max_age", "60")])).await;
    redirected_to(&r, "/login");
    let r = authorize(
        &app,
        Some(&b),
        &spa_query(&[("max_age", "60"), ("prompt", "none")]),
    )
    .await;
    assert_redirect_error(&app, &r, "login_required");
    let code = code_for(&app, &b, &[("max_age", "600")]).await;
    let r = spa_exchange(&app, &code).await;
    let id = jwt_part(&r.str_field("id_token"), 1);
    let now = app.clock.now().unix_timestamp();
    assert!(
        now - id["auth_time"].as_i64().expect("auth_time") >= 120,
        "auth_time is the login"
    );
}

#[tokio::test]
async fn login_never_returns_off_the_issuer() {
    let app = TestApp::with_config(config()).await;
    for bad in [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
        "evil.example/path",
        "http:/evil.example",
        " /account",
        "/a/../..//evil.example",
    ] {
        let r = app
            .get(&format!("/login?return_to={}", urlenc(bad)), &[])
            .await;
        assert_page(&r);
    }
    let r = app
        .get(
            "/login?return_to=%2Faccount&return_to=%2F%2Fevil.example",
            &[],
        )
        .await;
    assert_page(&r);
    let r = app
        .get(
            "/login?return_to=%2Foauth%2Fauthorize%3Fclient_id%3Dspa",
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(app.get("/login", &[]).await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_and_redirect_uri() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    // Stolen by another client.
    let code = code_for(&app, &b, &[]).await;
    let r = exchange(
        &app,
        &[
            ("code", &code),
            ("redirect_uri", CB),
            ("client_id", "other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    r.assert_error(400, "invalid_grant");
    spa_exchange(&app, &code)
        .await
        .assert_error(400, "invalid_grant");
    // Redeemed with another redirect URI, or none.
    let code = code_for(&app, &b, &[]).await;
    let r = exchange(
        &app,
        &[
            ("code", &code),
            ("redirect_uri", CB2),
            ("client_id", "spa"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    r.assert_error(400, "invalid_grant");
    let code = code_for(&app, &b, &[]).await;
    let r = exchange(
        &app,
        &[
            ("code", &code),
            ("client_id", "spa"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    r.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_code_lives_sixty_seconds() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    app.clock.advance(time::Duration::seconds(59));
    assert_eq!(spa_exchange(&app, &code).await.status, StatusCode::OK);
    let code = code_for(&app, &b, &[]).await;
    app.clock.advance(time::Duration::seconds(60));
    spa_exchange(&app, &code)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn ending_the_cookie_session_ends_its_token_sessions() {
    let app = TestApp::sqlite(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let r = spa_exchange(&app, &code).await;
    let access = r.str_field("access_token");
    let refresh = r.str_field("refresh_token");
    // A password-grant session of the same user is not a child: it survives.
    let other = app.login_again("alice").await;
    let out = app.as_browser(&b, "DELETE", "/v1/session", None).await;
    assert!(out.status.is_success(), "{}", out.text());
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert_eq!(app.me(&access).await.status, StatusCode::UNAUTHORIZED);
    let sid = jwt_part(&access, 1)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let feed = app.get("/v1/revocations?after=0", &[]).await;
    assert!(
        feed.text().contains(&sid),
        "the child is on the feed: {}",
        feed.text()
    );
    assert_eq!(app.me(&other.access).await.status, StatusCode::OK);
    // A code approved by the ended session cannot be redeemed.
    let b2 = app.browser_login("alice").await;
    let code = code_for(&app, &b2, &[]).await;
    let out = app.as_browser(&b2, "DELETE", "/v1/session", None).await;
    assert!(out.status.is_success());
    spa_exchange(&app, &code)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn nothing_is_a_server_error() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let long = "a".repeat(9000);
    for query in [
        "%ff%fe=%c3%28",
        "client_id=%00",
        "client_id=spa&redirect_uri=%0d%0aLocation:%20x",
        "response_type=code&client_id=spa&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&state=%0a",
        &format!("client_id=spa&x={long}"),
        "client_id=spa&&&==&redirect_uri=https%3A%2F%2Fapp.example%2Fcb",
    ] {
        for browser in [None, Some(&b)] {
            let r = authorize(&app, browser, query).await;
            assert!(r.status.as_u16() < 500, "{query}: {}", r.status);
            if let Some(location) = r.header("location") {
                assert!(
                    location.starts_with(CB) || location.starts_with("/login?"),
                    "{location}"
                );
            }
        }
    }
    let _ = ORIGIN;
}

#[tokio::test]
async fn an_idle_cookie_session_ends_its_token_sessions_at_their_next_refresh() {
    let app = TestApp::with_config(config()).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let r = spa_exchange(&app, &code).await;
    let refresh = r.str_field("refresh_token");
    let pair = app.rotate(&refresh).await;
    // A password-grant session (no parent) is not affected by any cookie session.
    let plain = app.login_again("alice").await;
    app.clock.advance(time::Duration::hours(25));
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
    let cookie = app
        .store
        .session(SessionId::parse(&b.sid).expect("sid"))
        .await;
    let cookie = cookie.expect("store").expect("session");
    assert_eq!(
        cookie.revoke_reason,
        Some(latchkey_core::RevokeReason::IdleTimeout),
        "the idle parent is recorded as ended"
    );
    assert_eq!(app.refresh(&plain.refresh).await.status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_exchanges_of_one_code_issue_at_most_one_live_session() {
    let app = std::sync::Arc::new(TestApp::with_config(config()).await);
    let b = signed_in(&app, "alice").await;
    for _ in 0..5 {
        let code = code_for(&app, &b, &[]).await;
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let app = app.clone();
                let code = code.clone();
                tokio::spawn(async move { spa_exchange(&app, &code).await })
            })
            .collect();
        let mut issued = Vec::new();
        for task in tasks {
            let r = task.await.expect("task");
            if r.status == StatusCode::OK {
                issued.push(r.str_field("refresh_token"));
            } else {
                r.assert_error(400, "invalid_grant");
            }
        }
        assert!(issued.len() <= 1, "one code, one session at most");
        // Every other presentation was a replay: the session of the first use is gone.
        for refresh in issued {
            app.refresh(&refresh)
                .await
                .assert_error(400, "invalid_grant");
        }
    }
}

#[tokio::test]
async fn a_password_change_or_ban_ends_the_child_token_sessions() {
    let mut c = config();
    c.admin_token = Some(Redacted("admin-token-0123456789".into()));
    let app = TestApp::with_config(c).await;
    let b = signed_in(&app, "alice").await;
    let code = code_for(&app, &b, &[]).await;
    let refresh = spa_exchange(&app, &code).await.str_field("refresh_token");
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&serde_json::json!({
                "current_password": crate::harness::PASSWORD,
                "new_password": "another horse battery staple"
            })),
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    // The kept cookie session signs in again; then a ban ends everything.
    let code = code_for(&app, &b, &[]).await;
    let r = spa_exchange(&app, &code).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let refresh = r.str_field("refresh_token");
    let user = jwt_part(&r.str_field("access_token"), 1)["sub"]
        .as_str()
        .expect("sub")
        .to_string();
    let r = app
        .call(
            "POST",
            &format!("/admin/v1/users/{user}/ban"),
            &[("authorization", "Bearer admin-token-0123456789")],
            None,
        )
        .await;
    assert!(r.status.is_success(), "{}", r.text());
    app.refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
    let r = authorize(&app, Some(&b), &spa_query(&[("prompt", "none")])).await;
    assert_redirect_error(&app, &r, "login_required");
}
