//! A fake Latchkey on 127.0.0.1:0: serves a JWKS built from real `SigningKey`s and a
//! revocation feed whose events the test controls, and counts the requests it gets.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use latchkey_tokens::{AccessTokenClaims, Algorithm, JwkSet, KeyRing, SigningKey, new_jti};
use serde_json::json;
use time::OffsetDateTime;

pub const AUDIENCE: &str = "api";

/// A feed event: (cursor, sid, exp, iat_before).
type FeedEvent = (i64, String, i64, Option<i64>);

#[derive(Default)]
struct Inner {
    keys: Mutex<Vec<SigningKey>>,
    /// (cursor, sid, exp, iat_before)
    events: Mutex<Vec<FeedEvent>>,
    feed_down: AtomicBool,
    jwks_down: AtomicBool,
    jwks_hits: AtomicUsize,
    feed_hits: AtomicUsize,
    feed_token: Mutex<Option<String>>,
}

/// Handle to the running fake; the server lives as long as the test's runtime.
#[derive(Clone)]
pub struct FakeLatchkey {
    pub addr: SocketAddr,
    pub issuer: String,
    inner: Arc<Inner>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

pub fn new_key(alg: Algorithm) -> SigningKey {
    SigningKey::generate(alg, OffsetDateTime::now_utc()).expect("key")
}

impl FakeLatchkey {
    /// Started with one Ed25519 key published and an empty feed.
    pub async fn start() -> FakeLatchkey {
        let inner = Arc::new(Inner::default());
        lock(&inner.keys).push(new_key(Algorithm::EdDSA));
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/v1/revocations", get(feed))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("fake latchkey serves");
        });
        FakeLatchkey {
            addr,
            issuer: format!("http://{addr}"),
            inner,
        }
    }

    /// The first published key.
    pub fn key(&self) -> SigningKey {
        lock(&self.inner.keys)[0].clone()
    }

    pub fn publish(&self, key: &SigningKey) {
        lock(&self.inner.keys).push(key.clone());
    }

    pub fn unpublish(&self, kid: &str) {
        lock(&self.inner.keys).retain(|k| k.kid() != kid);
    }

    /// Adds a feed event; returns its cursor.
    pub fn revoke(&self, sid: &str, exp: i64) -> i64 {
        let mut events = lock(&self.inner.events);
        let cursor = events.last().map_or(1, |e| e.0 + 1);
        events.push((cursor, sid.to_owned(), exp, None));
        cursor
    }

    /// Adds a role-removal entry: tokens of `sid` issued before `iat_before` are stale.
    pub fn mark_stale(&self, sid: &str, exp: i64, iat_before: i64) -> i64 {
        let mut events = lock(&self.inner.events);
        let cursor = events.last().map_or(1, |e| e.0 + 1);
        events.push((cursor, sid.to_owned(), exp, Some(iat_before)));
        cursor
    }

    pub fn set_feed_down(&self, down: bool) {
        self.inner.feed_down.store(down, Ordering::SeqCst);
    }

    pub fn set_jwks_down(&self, down: bool) {
        self.inner.jwks_down.store(down, Ordering::SeqCst);
    }

    pub fn require_feed_token(&self, token: &str) {
        *lock(&self.inner.feed_token) = Some(token.to_owned());
    }

    pub fn jwks_hits(&self) -> usize {
        self.inner.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn feed_hits(&self) -> usize {
        self.inner.feed_hits.load(Ordering::SeqCst)
    }

    /// Valid claims for this issuer and [`AUDIENCE`], session `sid`, 15 minutes to live.
    pub fn claims(&self, sid: &str) -> AccessTokenClaims {
        let now = now();
        AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: "user-1".into(),
            aud: AUDIENCE.into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: new_jti(),
            client_id: "spa".into(),
            scope: "read write".into(),
            sid: sid.into(),
            roles: Vec::new(),
        }
    }

    /// A genuine access token signed by `key`.
    pub fn sign_with(&self, key: &SigningKey, claims: &AccessTokenClaims) -> String {
        KeyRing::new(vec![key.clone()], key.kid())
            .expect("ring")
            .sign(claims)
            .expect("sign")
    }

    /// A genuine access token for session `sid`, signed by the first key.
    pub fn token(&self, sid: &str) -> String {
        self.sign_with(&self.key(), &self.claims(sid))
    }
}

async fn jwks(State(inner): State<Arc<Inner>>) -> Response {
    inner.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if inner.jwks_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let set = JwkSet {
        keys: lock(&inner.keys)
            .iter()
            .map(SigningKey::public_jwk)
            .collect(),
    };
    Json(set).into_response()
}

#[derive(serde::Deserialize)]
struct After {
    #[serde(default)]
    after: i64,
}

async fn feed(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Query(After { after }): Query<After>,
) -> Response {
    inner.feed_hits.fetch_add(1, Ordering::SeqCst);
    if inner.feed_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if let Some(token) = lock(&inner.feed_token).as_deref() {
        let expected = format!("Bearer {token}");
        if headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            != Some(&expected)
        {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    let events = lock(&inner.events);
    let page: Vec<_> = events.iter().filter(|e| e.0 > after).take(1000).collect();
    let cursor = page.last().map_or(after, |e| e.0);
    let revoked: Vec<_> = page
        .iter()
        .map(|(_, sid, exp, iat_before)| match iat_before {
            None => json!({"sid": sid, "exp": exp}),
            Some(before) => json!({"sid": sid, "exp": exp, "iat_before": before}),
        })
        .collect();
    Json(json!({"cursor": cursor, "revoked": revoked})).into_response()
}
