//! Refresh Token Rotation: one successor per token, reuse revokes the family, the grace
//! window, client binding and the absolute lifetime.
use crate::harness::*;
use time::Duration;

#[tokio::test]
async fn refresh_returns_a_new_pair_and_consumes_the_old_token() {
    let app = TestApp::new().await;
    let first = app.login("alice").await;
    let second = app.rotate(&first.refresh).await;
    assert_ne!(second.refresh, first.refresh);
    assert_ne!(second.access, first.access);
    assert_eq!(
        jwt_part(&second.access, 1)["sid"],
        jwt_part(&first.access, 1)["sid"],
        "same session"
    );
    let third = app.rotate(&second.refresh).await;
    assert_eq!(app.me(&third.access).await.status, 200);
}

#[tokio::test]
async fn reuse_revokes_the_whole_family_including_the_newest_token() {
    let app = TestApp::sqlite(test_config()).await;
    let first = app.login("bob").await;
    let second = app.rotate(&first.refresh).await;
    let third = app.rotate(&second.refresh).await;
    // An attacker replays the first token.
    let body = app
        .refresh(&first.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("reuse detected"),
        "{body}"
    );
    // The legitimate holder's newest token is dead, and so are the family's access tokens.
    let dead = app
        .refresh(&third.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        dead["error_description"]
            .as_str()
            .expect("text")
            .contains("revoked"),
        "{dead}"
    );
    app.me(&third.access)
        .await
        .assert_error(401, "unauthorized");
    app.me(&first.access)
        .await
        .assert_error(401, "unauthorized");
    // Other sessions of the same user are untouched.
    let other = app.login_again("bob").await;
    assert_eq!(app.me(&other.access).await.status, 200);
    assert_eq!(app.refresh(&other.refresh).await.status, 200);
}

#[tokio::test]
async fn reuse_of_the_immediate_predecessor_without_grace_is_reuse() {
    let app = TestApp::new().await;
    let first = app.login("carl").await;
    let second = app.rotate(&first.refresh).await;
    app.refresh(&first.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.refresh(&second.refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_refresh_token_only_works_for_its_client() {
    let app = TestApp::new().await;
    let pair = app.login("dora").await;
    let body = app
        .post_form_with(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &pair.refresh),
            ],
            &[(
                "authorization",
                &format!("Basic {}", b64(&format!("backend:{BACKEND_SECRET}"))),
            )],
        )
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("another client")
    );
    // The family is left alone: the rightful client still refreshes.
    assert_eq!(app.refresh(&pair.refresh).await.status, 200);
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[tokio::test]
async fn the_family_has_an_absolute_lifetime_that_rotation_never_extends() {
    let app = TestApp::new().await;
    let mut pair = app.login("eve").await;
    // Rotate daily for six days.
    for _ in 0..6 {
        app.clock.advance(Duration::days(1));
        pair = app.rotate(&pair.refresh).await;
    }
    // Late on day 7 the access token is capped at the family's end.
    app.clock
        .advance(Duration::hours(23) + Duration::minutes(50));
    pair = app.rotate(&pair.refresh).await;
    let claims = jwt_part(&pair.access, 1);
    let exp = claims["exp"].as_i64().expect("exp");
    let iat = claims["iat"].as_i64().expect("iat");
    assert_eq!(exp - iat, 600, "access token must not outlive the family");
    // Seven days after login the family is over, however recently it rotated.
    app.clock.advance(Duration::minutes(10));
    let body = app
        .refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("expired"),
        "{body}"
    );
}

#[tokio::test]
async fn refresh_ttl_is_configurable() {
    let mut config = test_config();
    config.refresh.ttl = latchkey_server::config::Ttl(std::time::Duration::from_secs(3600));
    let app = TestApp::with_config(config).await;
    let pair = app.login("finn").await;
    app.clock.advance(Duration::minutes(59));
    let pair = app.rotate(&pair.refresh).await;
    app.clock.advance(Duration::minutes(1));
    app.refresh(&pair.refresh)
        .await
        .assert_error(400, "invalid_grant");
}

fn grace_config(secs: u64) -> latchkey_server::Config {
    let mut config = test_config();
    config.refresh.reuse_interval =
        latchkey_server::config::Ttl(std::time::Duration::from_secs(secs));
    config
}

#[tokio::test]
async fn grace_window_returns_the_same_successor() {
    let app = TestApp::sqlite(grace_config(10)).await;
    let first = app.login("gail").await;
    let second = app.rotate(&first.refresh).await;
    app.clock.advance(Duration::seconds(5));
    let again = app.rotate(&first.refresh).await;
    assert_eq!(
        again.refresh, second.refresh,
        "same successor refresh token"
    );
    assert_eq!(
        jwt_part(&again.access, 1)["sid"],
        jwt_part(&second.access, 1)["sid"]
    );
    // The successor still works (and rotates normally).
    let third = app.rotate(&second.refresh).await;
    assert_eq!(app.me(&third.access).await.status, 200);
}

#[tokio::test]
async fn grace_window_ends_and_then_it_is_reuse() {
    let app = TestApp::new().await;
    let app = TestApp::build(grace_config(10), app.store.clone(), None).await;
    let first = app.login("hank").await;
    let second = app.rotate(&first.refresh).await;
    app.clock.advance(Duration::seconds(11));
    let body = app
        .refresh(&first.refresh)
        .await
        .assert_error(400, "invalid_grant");
    assert!(
        body["error_description"]
            .as_str()
            .expect("text")
            .contains("reuse")
    );
    app.refresh(&second.refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn grace_covers_only_the_immediate_predecessor() {
    let app = TestApp::with_config(grace_config(60)).await;
    let first = app.login("ida").await;
    let second = app.rotate(&first.refresh).await;
    let third = app.rotate(&second.refresh).await;
    // `first` is two generations back: reuse, even inside the window.
    app.refresh(&first.refresh)
        .await
        .assert_error(400, "invalid_grant");
    app.refresh(&third.refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn grace_is_only_for_the_same_client() {
    let app = TestApp::with_config(grace_config(60)).await;
    let first = app.login("jon").await;
    let second = app.rotate(&first.refresh).await;
    let r = app
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &first.refresh),
                ("client_id", "backend"),
                ("client_secret", BACKEND_SECRET),
            ],
        )
        .await;
    r.assert_error(400, "invalid_grant");
    assert!(
        !r.text().contains(&second.refresh),
        "successor leaked to another client"
    );
}
