//! Secrets at rest (DESIGN invariant 3), on every backend: SQLite (the database files, WAL
//! included, byte for byte), PostgreSQL (every row of every table of the test's schema) and
//! Redis (every key under the test's prefix with all it holds, plus the SQLite it wraps for
//! users and keys).
//!
//! A flow hands out every kind of secret: a password and its replacement, a cookie secret and
//! its CSRF token, refresh tokens through two rotations and a grace-window replay (so a sealed
//! successor is stored), access tokens. The dump must hold none of them, in raw, hex, base64
//! or base64url form; and, as positive controls that the scan sees the records at all, it must
//! hold what is stored instead: the SHA-256 of each refresh token, of the cookie secret and of
//! the CSRF token, the sealed successor (which opens to the successor with its predecessor
//! only), and the Argon2id PHC string that verifies the current password.
use crate::harness::*;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use latchkey_core::{Secret, open_successor};
use latchkey_store::testing::{RedisPrefix, dump_postgres_schema, service_url};
use serde_json::json;
use std::sync::Arc;

const NEW_PASSWORD: &str = "a new password kept at rest 42";

fn config() -> latchkey_server::Config {
    let mut config = test_config();
    config.refresh.reuse_interval =
        latchkey_server::config::Ttl(std::time::Duration::from_secs(30));
    config
}

/// Everything the flow handed out, and what the store must hold instead.
struct Handed {
    /// (what, text) of every secret a client received or sent.
    secrets: Vec<(String, String)>,
    /// (what, SHA-256) that must be stored.
    hashes: Vec<(String, [u8; 32])>,
    /// The first refresh token's sealed successor, as the store returns it.
    sealed: Vec<u8>,
    /// The user's PHC string, as the store returns it.
    password_hash: String,
}

async fn hand_out(app: &TestApp) -> Handed {
    let user = "at-rest";
    app.sign_up(user).await;
    let b = app.browser_login(user).await;
    let r = app
        .as_browser(
            &b,
            "POST",
            "/v1/password",
            Some(&json!({"current_password": PASSWORD, "new_password": NEW_PASSWORD})),
        )
        .await;
    assert_eq!(r.status, 204, "change password: {}", r.text());
    let r = app.password_grant(user, NEW_PASSWORD, "spa").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let first = Pair {
        access: r.str_field("access_token"),
        refresh: r.str_field("refresh_token"),
    };
    let second = app.rotate(&first.refresh).await;
    let replay = app.rotate(&first.refresh).await; // within the grace window
    assert_eq!(replay.refresh, second.refresh, "the grace window replays");
    let third = app.rotate(&second.refresh).await;
    let r = app.get("/v1/session", &[("cookie", &b.cookie)]).await;
    assert_eq!(r.status, 200, "the cookie session lives: {}", r.text());

    let cookie_secret = b.cookie.split_once('=').expect("name=value").1.to_string();
    let secret = |text: &str| Secret::parse(text).expect("a 256-bit secret");
    let mut handed = Handed {
        secrets: vec![
            ("password".into(), PASSWORD.into()),
            ("new password".into(), NEW_PASSWORD.into()),
            ("cookie secret".into(), cookie_secret.clone()),
            ("CSRF token".into(), b.csrf.clone()),
        ],
        hashes: vec![
            ("cookie secret".into(), secret(&cookie_secret).hash().0),
            ("CSRF token".into(), secret(&b.csrf).hash().0),
        ],
        sealed: Vec::new(),
        password_hash: String::new(),
    };
    for (name, pair) in [
        ("first", &first),
        ("second", &second),
        ("replay", &replay),
        ("third", &third),
    ] {
        handed
            .secrets
            .push((format!("{name} refresh token"), pair.refresh.clone()));
        handed.secrets.push((
            format!("{name} access token signature"),
            pair.access
                .rsplit('.')
                .next()
                .expect("signature")
                .to_string(),
        ));
        handed.hashes.push((
            format!("{name} refresh token"),
            secret(&pair.refresh).hash().0,
        ));
    }

    // What the store returns for them: the controls below find these in the raw dump.
    let (token, _) = app
        .store
        .refresh_token(&secret(&first.refresh).hash())
        .await
        .expect("read")
        .expect("the first refresh token is kept (consumed) for reuse detection");
    handed.sealed = token.sealed_successor.expect("a sealed successor");
    let opened = open_successor(&secret(&first.refresh), &handed.sealed).expect("opens");
    assert!(
        opened.ct_eq(&secret(&second.refresh)),
        "the sealed successor opens to the successor"
    );
    assert!(
        open_successor(&secret(&third.refresh), &handed.sealed).is_err(),
        "only its predecessor opens it"
    );
    let stored_user = app
        .store
        .user_by_username(user)
        .await
        .expect("read")
        .expect("user");
    assert!(
        stored_user.password_hash.starts_with("$argon2id$"),
        "{}…",
        &stored_user.password_hash[..10]
    );
    assert!(
        app.state
            .passwords
            .verify(NEW_PASSWORD, Some(&stored_user.password_hash))
            .await
            .expect("verify"),
        "the stored PHC string verifies the current password"
    );
    handed.password_hash = stored_user.password_hash;
    handed
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// A value as it might be stored: raw, hex (both cases), base64 (padded) and base64url.
fn forms(bytes: &[u8]) -> Vec<Vec<u8>> {
    vec![
        bytes.to_vec(),
        hex(bytes, false).into_bytes(),
        hex(bytes, true).into_bytes(),
        STANDARD.encode(bytes).into_bytes(),
        URL_SAFE.encode(bytes).into_bytes(),
        URL_SAFE_NO_PAD.encode(bytes).into_bytes(),
    ]
}

/// Every form of a secret's text, and of the bytes its base64url text stands for.
fn secret_forms(text: &str) -> Vec<Vec<u8>> {
    let mut all = forms(text.as_bytes());
    if let Ok(raw) = URL_SAFE_NO_PAD.decode(text) {
        all.extend(forms(&raw));
    }
    all
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// `sessions`: where sessions and refresh tokens live; `users`: where users live (the same
/// dump but for Redis).
fn check(backend: &str, sessions: &[u8], users: &[u8], handed: &Handed) {
    for (what, text) in &handed.secrets {
        for form in secret_forms(text) {
            assert!(
                !contains(sessions, &form) && !contains(users, &form),
                "{backend}: the {what} is stored (as {:?}…)",
                String::from_utf8_lossy(&form[..form.len().min(6)])
            );
        }
    }
    // Positive controls: the scan sees the records, and they hold hashes.
    for (what, hash) in &handed.hashes {
        assert!(
            forms(hash).iter().any(|f| contains(sessions, f)),
            "{backend}: the SHA-256 of the {what} is not in the dump: the scan missed the records"
        );
    }
    assert!(
        forms(&handed.sealed).iter().any(|f| contains(sessions, f)),
        "{backend}: the sealed successor is not in the dump"
    );
    assert!(
        contains(users, handed.password_hash.as_bytes()),
        "{backend}: the Argon2id PHC string is not in the dump"
    );
    let _ = std::io::Write::write_fmt(
        &mut std::io::stderr(),
        format_args!(
            "{backend}: {} secrets absent in {} forms each from {} + {} bytes; {} hashes, the \
             sealed successor and the PHC string present\n",
            handed.secrets.len(),
            forms(b"x").len() * 2,
            sessions.len(),
            users.len(),
            handed.hashes.len()
        ),
    );
}

/// Every file in `dir` (the database, its WAL and shared memory), byte for byte.
fn files_in(dir: &std::path::Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir") {
        bytes.extend(std::fs::read(entry.expect("entry").path()).expect("read"));
    }
    bytes
}

async fn sqlite_in(dir: &std::path::Path) -> latchkey_store::SqliteStore {
    let url = format!("sqlite://{}", dir.join("latchkey.db").display());
    latchkey_store::SqliteStore::connect(&url)
        .await
        .expect("SQLite")
}

#[tokio::test]
async fn sqlite_keeps_only_hashes_at_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = sqlite_in(dir.path()).await;
    let app = TestApp::build(config(), Arc::new(store), None).await;
    let handed = hand_out(&app).await;
    let dump = files_in(dir.path());
    check("sqlite", &dump, &dump, &handed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_only_hashes_at_rest() {
    let Some(url) = service_url(
        "LATCHKEY_TEST_POSTGRES_URL",
        "postgres_keeps_only_hashes_at_rest",
        "postgres://postgres@127.0.0.1:5432/test",
    ) else {
        return;
    };
    let (store, schema) = latchkey_store::postgres::TestSchema::create(&url)
        .await
        .expect("PostgreSQL schema");
    let app = TestApp::build(config(), Arc::new(store), None).await;
    let handed = hand_out(&app).await;
    let dump = dump_postgres_schema(&url, schema.name())
        .await
        .expect("dump the schema");
    check("postgres", dump.as_bytes(), dump.as_bytes(), &handed);
    drop(app);
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_only_hashes_at_rest() {
    let Some(url) = service_url(
        "LATCHKEY_TEST_REDIS_URL",
        "redis_keeps_only_hashes_at_rest",
        "redis://127.0.0.1:6379",
    ) else {
        return;
    };
    let prefix = RedisPrefix::new(&url);
    let dir = tempfile::tempdir().expect("temp dir");
    let sql = sqlite_in(dir.path()).await;
    let store = latchkey_store::RedisStore::new(Arc::new(sql), &url, prefix.prefix())
        .await
        .expect("Redis");
    let app = TestApp::build(config(), Arc::new(store), None).await;
    let handed = hand_out(&app).await;
    let mut sessions = Vec::new();
    for (key, values) in tokio::task::block_in_place(|| prefix.dump()).expect("dump the prefix") {
        sessions.extend(key);
        for value in values {
            sessions.push(b'\n');
            sessions.extend(value);
        }
        sessions.push(b'\n');
    }
    let users = files_in(dir.path());
    check("redis", &sessions, &users, &handed);
    drop(app);
    drop(prefix);
}
