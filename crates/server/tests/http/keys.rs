//! Signing-key rotation: published before it signs, old key kept until its tokens expire.
use crate::harness::*;
use latchkey_server::config::{Redacted, Ttl};
use std::time::Duration;

fn kids(app_jwks: &serde_json::Value) -> Vec<String> {
    app_jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_string())
        .collect()
}

#[tokio::test]
async fn rotation_prepublishes_then_switches_then_retires() {
    let mut config = test_config();
    config.admin_token = Some(Redacted("admin-token-0123456789".into()));
    config.keys.publish_delay = Ttl(Duration::from_secs(120));
    let app = TestApp::with_config(config).await;
    let old_kid = kids(&app.get("/.well-known/jwks.json", &[]).await.json())[0].clone();
    let before = app.login("alice").await;

    let r = app
        .call(
            "POST",
            "/admin/v1/keys/rotate",
            &[("authorization", "Bearer admin-token-0123456789")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let new_kid = r.str_field("kid");
    assert_ne!(new_kid, old_kid);
    // Published at once, but not signing yet.
    let published = kids(&app.get("/.well-known/jwks.json", &[]).await.json());
    assert!(published.contains(&new_kid) && published.contains(&old_kid));
    let during = app.login_again("alice").await;
    assert_eq!(jwt_part(&during.access, 0)["kid"], old_kid.as_str());

    // After the publish delay, new tokens use the new key; old tokens still verify.
    app.clock.advance(time::Duration::seconds(121));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    let after = app.login_again("alice").await;
    assert_eq!(jwt_part(&after.access, 0)["kid"], new_kid.as_str());
    let r = app.me(&during.access).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Once every token of the old key has expired (15 min + margin), it leaves the JWKS.
    app.clock.advance(time::Duration::minutes(10));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    assert!(kids(&app.get("/.well-known/jwks.json", &[]).await.json()).contains(&old_kid));
    app.clock.advance(time::Duration::minutes(8));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    assert_eq!(
        kids(&app.get("/.well-known/jwks.json", &[]).await.json()),
        vec![new_kid.clone()]
    );
    let fresh = app.login_again("alice").await;
    assert_eq!(jwt_part(&fresh.access, 0)["kid"], new_kid.as_str());
    assert_eq!(app.me(&fresh.access).await.status, 200);
    drop((before, after));
}

#[tokio::test]
async fn automatic_rotation_after_the_interval() {
    let mut config = test_config();
    config.keys.rotate_every = Ttl(Duration::from_secs(3600));
    config.keys.publish_delay = Ttl(Duration::from_secs(0));
    let app = TestApp::with_config(config).await;
    let first = kids(&app.get("/.well-known/jwks.json", &[]).await.json());
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    assert_eq!(
        kids(&app.get("/.well-known/jwks.json", &[]).await.json()),
        first,
        "not due yet"
    );
    app.clock.advance(time::Duration::hours(1));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    let now = kids(&app.get("/.well-known/jwks.json", &[]).await.json());
    assert_eq!(now.len(), 2);
    let t = app.login("bob").await;
    assert_ne!(jwt_part(&t.access, 0)["kid"], first[0].as_str());
}

#[tokio::test]
async fn key_rotation_needs_the_admin_token() {
    let app = TestApp::new().await;
    app.call("POST", "/admin/v1/keys/rotate", &[], None)
        .await
        .assert_error(404, "not_found");
}
