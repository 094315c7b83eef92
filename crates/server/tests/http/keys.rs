//! Signing-key rotation: published before it signs, old key kept until its tokens expire.
use crate::harness::*;
use latchkey_server::config::{Redacted, Ttl};
use std::time::Duration;

/// The published access-token (EdDSA) keys; the ID-token key (RS256) has its own test below.
fn kids(app_jwks: &serde_json::Value) -> Vec<String> {
    kids_of(app_jwks, "EdDSA")
}

fn kids_of(app_jwks: &serde_json::Value, alg: &str) -> Vec<String> {
    app_jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter(|k| k["alg"] == alg)
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

/// Two installs started in the same minute on empty stores used to get the same first `kid`
/// (derived from the algorithm and the minute) for different keys. Now the first key is
/// published under its RFC 7638 thumbprint: unique to the key. Instances of one install still
/// agree on one key (they race for one stored claim), and a key stored before keeps its `kid`.
#[tokio::test]
async fn first_keys_of_two_installs_never_share_a_kid() {
    use latchkey_core::ManualClock;
    use latchkey_server::AppState;
    use std::sync::Arc;
    let clock = ManualClock::starting_now();
    let mut jwks = Vec::new();
    for _ in 0..2 {
        let store = Arc::new(latchkey_store::MemoryStore::new());
        let state = AppState::new(test_config(), store, Arc::new(clock.clone()))
            .await
            .expect("state");
        let mut set = state.keyring().jwks();
        set.keys.retain(|k| k.alg == "EdDSA");
        jwks.push(set);
    }
    let (a, b) = (&jwks[0].keys[0], &jwks[1].keys[0]);
    assert_ne!(a.kid, b.kid, "two installs, one kid");
    assert_eq!(a.kid, a.thumbprint());
    assert_eq!(b.kid, b.thumbprint());

    // Instances of one install, started together, agree on the key and its kid.
    let shared: Arc<dyn latchkey_store::Store> = Arc::new(latchkey_store::MemoryStore::new());
    let (x, y) = tokio::join!(
        AppState::new(test_config(), shared.clone(), Arc::new(clock.clone())),
        AppState::new(test_config(), shared.clone(), Arc::new(clock.clone())),
    );
    let (x, y) = (x.expect("state"), y.expect("state"));
    assert_eq!(x.keyring().jwks(), y.keyring().jwks());
    // One access-token key and one ID-token key.
    assert_eq!(x.keyring().jwks().keys.len(), 2);
}

/// A key stored before this change (an id that is not a first-key claim) keeps its `kid`,
/// in the JWKS and in the tokens it signs.
#[tokio::test]
async fn keys_stored_before_keep_their_kid() {
    use latchkey_core::Clock;
    let store: std::sync::Arc<dyn latchkey_store::Store> =
        std::sync::Arc::new(latchkey_store::MemoryStore::new());
    let now = latchkey_core::SystemClock.now();
    let key =
        latchkey_tokens::SigningKey::generate(latchkey_tokens::Algorithm::EdDSA, now).expect("key");
    store
        .insert_signing_key(&latchkey_store::StoredKey {
            kid: "Ab3legacy-kid-from-a-minute".into(),
            algorithm: "EdDSA".into(),
            private_der: key.private_pkcs8_der().to_vec(),
            created_at: now - time::Duration::days(1),
            activates_at: now - time::Duration::days(1),
        })
        .await
        .expect("insert");
    let app = TestApp::build(test_config(), store, None).await;
    let published = kids(&app.get("/.well-known/jwks.json", &[]).await.json());
    assert_eq!(published, ["Ab3legacy-kid-from-a-minute"]);
    let t = app.login("legacy").await;
    assert_eq!(jwt_part(&t.access, 0)["kid"], "Ab3legacy-kid-from-a-minute");
    assert_eq!(app.me(&t.access).await.status, 200);
}

/// The ID-token key ([id_token] algorithm, RS256 by default) is generated with the first
/// access-token key, published, rotated with it, and retired by the same rule.
#[tokio::test]
async fn the_id_token_key_is_published_rotated_and_retired() {
    let mut config = test_config();
    config.admin_token = Some(Redacted("admin-token-0123456789".into()));
    config.keys.publish_delay = Ttl(Duration::from_secs(120));
    let app = TestApp::with_config(config).await;
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    let old = kids_of(&jwks, "RS256");
    assert_eq!(old.len(), 1, "{jwks}");
    assert_eq!(app.state.keyring().signing_algorithms().len(), 2);
    let r = app
        .call(
            "POST",
            "/admin/v1/keys/rotate",
            &[("authorization", "Bearer admin-token-0123456789")],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let both = kids_of(
        &app.get("/.well-known/jwks.json", &[]).await.json(),
        "RS256",
    );
    assert_eq!(both.len(), 2, "the new ID-token key is pre-published");
    // Switched after the delay, retired once ID and access tokens of the old key expired.
    app.clock.advance(time::Duration::seconds(121));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    app.clock.advance(time::Duration::minutes(18));
    latchkey_server::keys::reload(&app.state)
        .await
        .expect("reload");
    let now = kids_of(
        &app.get("/.well-known/jwks.json", &[]).await.json(),
        "RS256",
    );
    assert_eq!(now.len(), 1);
    assert_ne!(now, old);
    // An ID-token algorithm equal to the access-token one: a single key.
    let mut config = test_config();
    config.id_token.algorithm = latchkey_tokens::Algorithm::EdDSA;
    let app = TestApp::with_config(config).await;
    let jwks = app.get("/.well-known/jwks.json", &[]).await.json();
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(1));
}
