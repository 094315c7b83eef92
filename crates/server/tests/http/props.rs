//! Property tests over every parser that takes network input: JWS compact tokens, the cookie
//! header, HTTP Basic client credentials, OAuth and account request bodies, feed cursors and
//! BFF paths.
//!
//! Each property runs `PROPTEST_CASES` cases (default 256) from a fixed seed (so a run is
//! reproducible; `PROPTEST_RNG_SEED` picks another) and prints how many cases ran, past the
//! harness's capture. Nothing is written to the source tree on failure: the failing input is in
//! the panic message.
use crate::harness::*;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request};
use latchkey_core::Secret;
use latchkey_server::bff::path::check_rest;
use latchkey_server::cookie::CookieSettings;
use latchkey_tokens::{AccessTokenClaims, Algorithm, KeyRing, SigningKey, Validation};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use serde_json::{Value, json};
use std::io::Write;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// The seed when `PROPTEST_RNG_SEED` is not set.
const SEED: u64 = 0x1a7c_4e75_2026;

/// Runs one property and prints `proptest <name>: <n> cases passed`.
fn check<S>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    // `Config::default()` reads PROPTEST_CASES (default 256) and PROPTEST_RNG_SEED.
    let mut config = Config::default();
    if matches!(config.rng_seed, RngSeed::Random) {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    config.failure_persistence = None;
    let seed = config.rng_seed;
    let ran = AtomicU32::new(0);
    let started = Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        ran.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    if let Err(e) = result {
        panic!("property {name} failed (seed {seed}): {e}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "proptest {name}: {} cases passed in {:?} (seed {seed})",
        ran.load(Ordering::Relaxed),
        started.elapsed()
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A 4xx must be the standard error body; nothing may be a 5xx.
fn standard_answer(what: &str, r: &Response) -> Result<(), TestCaseError> {
    let status = r.status.as_u16();
    prop_assert!(status < 500, "{what}: {status} {}", r.text());
    if status >= 400 {
        let body: Value = serde_json::from_slice(&r.body).map_err(|e| {
            TestCaseError::fail(format!(
                "{what}: {status} body is not JSON ({e}): {}",
                r.text()
            ))
        })?;
        let object = body.as_object();
        prop_assert_eq!(object.map(|o| o.len()), Some(2), "{}: {}", what, body);
        prop_assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
        prop_assert!(
            body["error_description"]
                .as_str()
                .is_some_and(|e| !e.is_empty()),
            "{what}: {body}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// JWS compact form (latchkey-tokens).

const ISSUER: &str = "https://issuer.props.test";
const NOW: i64 = 1_800_000_000;

fn ring(alg: Algorithm) -> KeyRing {
    let created = time::OffsetDateTime::from_unix_timestamp(NOW - 60).expect("time");
    let key = SigningKey::generate(alg, created).expect("key");
    KeyRing::new(vec![key.clone()], key.kid()).expect("ring")
}

fn claims_strategy() -> impl Strategy<Value = AccessTokenClaims> {
    (
        ".{1,40}",
        ".{0,20}",
        "[ -~]{1,40}",
        ".{1,40}",
        "[a-z ]{0,30}",
        ".{1,40}",
        0i64..600,
        1i64..3600,
    )
        .prop_map(
            |(sub, aud, jti, client_id, scope, sid, age, ttl)| AccessTokenClaims {
                iss: ISSUER.into(),
                sub,
                aud,
                exp: NOW - age + ttl + 600,
                iat: NOW - age,
                nbf: NOW - age,
                jti,
                client_id,
                scope,
                sid,
                roles: Vec::new(),
            },
        )
}

#[derive(Debug, Clone)]
enum Mutation {
    Replace(usize, char),
    Insert(usize, char),
    Delete(usize),
    Truncate(usize),
    SwapSegments(usize, usize),
    FlipCase(usize),
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let c = prop_oneof![
        proptest::char::ranges(vec!['A'..='Z', 'a'..='z', '0'..='9'].into()),
        Just('-'),
        Just('_'),
        Just('.'),
        Just('='),
        Just('+'),
        Just('/'),
        any::<char>(),
    ];
    prop_oneof![
        (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Replace(i, c)),
        (any::<usize>(), c).prop_map(|(i, c)| Mutation::Insert(i, c)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
        (0usize..3, 0usize..3).prop_map(|(a, b)| Mutation::SwapSegments(a, b)),
        any::<usize>().prop_map(Mutation::FlipCase),
    ]
}

fn mutate(token: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let n = chars.len().max(1);
    match *m {
        Mutation::Replace(i, c) => {
            let i = i % n;
            if i < chars.len() {
                chars[i] = c;
            }
        }
        Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
        Mutation::Delete(i) => {
            if !chars.is_empty() {
                chars.remove(i % chars.len());
            }
        }
        Mutation::Truncate(i) => chars.truncate(i % n),
        Mutation::SwapSegments(a, b) => {
            let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
            if a < parts.len() && b < parts.len() {
                parts.swap(a, b);
            }
            return parts.join(".");
        }
        Mutation::FlipCase(i) => {
            let i = i % n;
            if let Some(c) = chars.get_mut(i) {
                *c = if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                };
            }
        }
    }
    chars.into_iter().collect()
}

/// Any claims round-trip; any mutation of a signed token that changes it is refused.
#[test]
fn jwt_only_the_token_as_signed_verifies() {
    let rings = [ring(Algorithm::EdDSA), ring(Algorithm::ES256)];
    let validation = Validation::new(ISSUER, NOW);
    check(
        "jwt_only_the_token_as_signed_verifies",
        (
            0usize..2,
            claims_strategy(),
            proptest::collection::vec(mutation_strategy(), 1..4),
        ),
        |(which, claims, mutations)| {
            let ring = &rings[which];
            let token = ring
                .sign(&claims)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let verified = ring.verify(&token, &validation);
            prop_assert_eq!(verified.as_ref().ok(), Some(&claims), "{:?}", verified);
            let mut mutated = token.clone();
            for m in &mutations {
                mutated = mutate(&mutated, m);
            }
            if mutated != token {
                let result = ring.verify(&mutated, &validation);
                prop_assert!(
                    result.is_err(),
                    "a mutated token verified: {mutated:?} from {token:?}"
                );
                // The other ring's keys never verify it either.
                prop_assert!(rings[1 - which].verify(&mutated, &validation).is_err());
            }
            Ok(())
        },
    );
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Arbitrary strings, and JWS-shaped tokens with plausible headers (this ring's kid and alg,
/// `none`, HS256, missing or odd `typ`) and random or absent signatures: never a panic, never
/// verified.
#[test]
fn jwt_forged_and_arbitrary_tokens_never_verify() {
    let ring = ring(Algorithm::EdDSA);
    let kid = ring.signing_key().kid().to_string();
    let validation = Validation::new(ISSUER, NOW);
    let header = (
        prop_oneof![
            Just(Some("EdDSA".to_string())),
            Just(Some("ES256".to_string())),
            Just(Some("none".to_string())),
            Just(Some("HS256".to_string())),
            Just(None),
            ".{0,8}".prop_map(Some),
        ],
        prop_oneof![
            Just(Some(kid.clone())),
            Just(None),
            ".{0,20}".prop_map(Some)
        ],
        prop_oneof![
            Just(Some("at+jwt".to_string())),
            Just(Some("JWT".to_string())),
            Just(None)
        ],
    )
        .prop_map(|(alg, kid, typ)| {
            let mut h = serde_json::Map::new();
            for (k, v) in [("alg", alg), ("kid", kid), ("typ", typ)] {
                if let Some(v) = v {
                    h.insert(k.into(), Value::String(v));
                }
            }
            Value::Object(h).to_string()
        });
    let shaped = (
        header,
        claims_strategy(),
        proptest::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(header, claims, sig)| {
            format!(
                "{}.{}.{}",
                b64(header.as_bytes()),
                b64(&serde_json::to_vec(&claims).expect("json")),
                b64(&sig)
            )
        });
    let strategy = prop_oneof![
        ".{0,200}",
        "[A-Za-z0-9_.=-]{0,300}",
        shaped,
        "[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,60}\\.[A-Za-z0-9_-]{0,90}",
    ];
    check(
        "jwt_forged_and_arbitrary_tokens_never_verify",
        strategy,
        |token| {
            let result = ring.verify(&token, &validation);
            prop_assert!(result.is_err(), "verified: {token:?}");
            let result = ring.public_keys().verify(&token, &validation);
            prop_assert!(result.is_err(), "verified by the public set: {token:?}");
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// The cookie header.

fn cookie_settings() -> CookieSettings {
    CookieSettings {
        name: "__Host-latchkey",
        secure: true,
        max_age_secs: 3600,
    }
}

/// Arbitrary Cookie header bytes never panic the parser, and the session cookie is found
/// among any other cookies (any spacing, any order), refused when sent twice.
#[test]
fn cookie_header_parsing() {
    let settings = cookie_settings();
    let other_name =
        "[A-Za-z0-9_!#$%&'*+.^`|~-]{1,12}".prop_filter("not ours", |n| n != "__Host-latchkey");
    let other = (other_name, "[ -~&&[^;]]{0,20}").prop_map(|(n, v)| format!("{n}={v}"));
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(other, 0..6),
        any::<prop::sample::Index>(),
        "[ \t]{0,2}",
        any::<bool>(),
    );
    check(
        "cookie_header_parsing",
        strategy,
        |(raw, others, position, space, twice)| {
            // Arbitrary bytes (whatever a header value may carry).
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let mut headers = axum::http::HeaderMap::new();
                headers.insert(axum::http::header::COOKIE, value);
                let _ = settings.read(&headers);
            }
            // Ours among others.
            let secret = Secret::generate();
            let mut pairs = others.clone();
            let at = position.index(pairs.len() + 1);
            pairs.insert(at, format!("__Host-latchkey={}", secret.to_text()));
            if twice {
                pairs.push(format!("__Host-latchkey={}", Secret::generate().to_text()));
            }
            let header = pairs.join(&format!(";{space}"));
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                axum::http::header::COOKIE,
                HeaderValue::from_str(&header).map_err(|e| TestCaseError::fail(e.to_string()))?,
            );
            match settings.read(&headers) {
                Ok(Some(found)) => {
                    prop_assert!(!twice, "a duplicated session cookie was accepted: {header}");
                    prop_assert!(found.ct_eq(&secret), "another value was read: {header}");
                }
                Ok(None) => prop_assert!(false, "the session cookie was not found: {header}"),
                Err(_) => prop_assert!(twice, "refused: {header}"),
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// HTTP: Basic credentials, bodies, cookies and cursors through the whole router.

fn header_value_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[ -~]{0,80}",
        "(Basic|basic|BASIC|Bearer) [A-Za-z0-9+/=_-]{0,60}",
        proptest::collection::vec(any::<u8>(), 0..60).prop_map(|b| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(b)
            )
        }),
        ("[ -~]{0,20}", "[ -~]{0,30}").prop_map(|(id, secret)| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
            )
        }),
    ]
}

/// Percent-encodes `s` for `application/x-www-form-urlencoded`, escaping each character that
/// needs it and, where `escape_more` says so, some that do not.
fn form_encode(s: &str, escape_more: &[bool]) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        let plain = c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*');
        if plain && !escape_more.get(i).copied().unwrap_or(false) {
            out.push(c);
        } else if c == ' ' {
            out.push('+');
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

fn basic(id: &str, secret: &str, scheme: &str) -> String {
    use base64::Engine;
    format!(
        "{scheme} {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

/// HTTP Basic client authentication at the introspection endpoint: any Authorization header
/// gets a standard answer, never a 5xx; the real credentials, however they are legitimately
/// encoded, authenticate; anything else that decodes to a different secret does not.
#[test]
fn basic_client_credentials() {
    let rt = runtime();
    let app = rt.block_on(TestApp::new());
    let strategy = (
        header_value_strategy(),
        proptest::collection::vec(any::<bool>(), 32),
        prop_oneof![Just("Basic"), Just("basic"), Just("BASIC")],
        "[ -~]{1,12}",
    );
    check(
        "basic_client_credentials",
        strategy,
        |(header, escape, scheme, suffix)| {
            rt.block_on(async {
                let introspect = |authorization: String| {
                    let app = &app;
                    async move {
                        let mut builder = Request::builder()
                            .method(Method::POST)
                            .uri("/oauth/introspect")
                            .header("content-type", "application/x-www-form-urlencoded");
                        if let Ok(v) = HeaderValue::from_str(&authorization) {
                            builder = builder.header("authorization", v);
                        }
                        app.send(
                            builder
                                .body(Body::from("token=not-a-token"))
                                .expect("request"),
                        )
                        .await
                    }
                };
                let r = introspect(header.clone()).await;
                standard_answer(&format!("Authorization: {header:?}"), &r)?;
                if r.status == 200 {
                    prop_assert_eq!(r.json(), json!({"active": false}));
                }

                let good = basic(
                    &form_encode("backend", &escape),
                    &form_encode(BACKEND_SECRET, &escape[7..]),
                    scheme,
                );
                let r = introspect(good.clone()).await;
                prop_assert_eq!(r.status.as_u16(), 200, "{}: {}", good, r.text());
                prop_assert_eq!(r.json(), json!({"active": false}));

                // The real secret with more after it, the extra part left unencoded.
                let wrong = basic("backend", &format!("{BACKEND_SECRET}{suffix}"), scheme);
                let r = introspect(wrong.clone()).await;
                prop_assert_eq!(
                    r.status.as_u16(),
                    401,
                    "{} (secret + {:?}): {}",
                    wrong,
                    suffix,
                    r.text()
                );
                standard_answer(&wrong, &r)?;
                Ok(())
            })
        },
    );
}

const CONTENT_TYPES: [Option<&str>; 7] = [
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("application/json; charset=utf-8"),
    Some("text/plain"),
    Some("multipart/form-data; boundary=x"),
    Some("application/merge-patch+json"),
    None,
];

const FIELDS: [&str; 12] = [
    "grant_type",
    "username",
    "password",
    "refresh_token",
    "client_id",
    "client_secret",
    "scope",
    "token",
    "token_type_hint",
    "current_password",
    "new_password",
    "x",
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("password"),
            Just("refresh_token"),
            Just("spa"),
            Just("backend"),
            Just("read write"),
            Just("")
        ]
        .prop_map(|s| Value::String(s.into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(FIELDS.to_vec()), inner), 0..6)
                .prop_map(|pairs| {
                    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                }),
        ]
    })
}

fn body_strategy() -> impl Strategy<Value = Vec<u8>> {
    let form_pair = (
        prop_oneof![
            proptest::sample::select(FIELDS.to_vec()).prop_map(str::to_string),
            "[ -~]{0,10}"
        ],
        prop_oneof![
            Just("password".to_string()),
            Just("refresh_token".to_string()),
            Just("spa".to_string()),
            ".{0,30}"
        ],
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        proptest::collection::vec(form_pair, 0..8).prop_map(|pairs| {
            serde_urlencoded::to_string(pairs)
                .unwrap_or_default()
                .into_bytes()
        }),
        "[ -~]{0,200}".prop_map(String::into_bytes),
    ]
}

/// Arbitrary bodies, in any content type, at every endpoint that parses one: never a 5xx, and
/// every 4xx is the standard error body.
#[test]
fn request_bodies_get_standard_answers() {
    let rt = runtime();
    let (app, browser) = rt.block_on(async {
        let app = TestApp::new().await;
        app.sign_up("props-body").await;
        let browser = app.browser_login("props-body").await;
        (app, browser)
    });
    let endpoints = [
        "/oauth/token",
        "/oauth/revoke",
        "/oauth/introspect",
        "/v1/users",
        "/v1/session",
        "/v1/password",
        "/v1/sessions/revoke-others",
    ];
    let strategy = (
        proptest::sample::select(endpoints.to_vec()),
        proptest::sample::select(CONTENT_TYPES.to_vec()),
        body_strategy(),
        any::<bool>(),
    );
    check(
        "request_bodies_get_standard_answers",
        strategy,
        |(path, content_type, body, as_browser)| {
            rt.block_on(async {
                let mut builder = Request::builder().method(Method::POST).uri(path);
                if let Some(ct) = content_type {
                    builder = builder.header("content-type", ct);
                }
                // Account endpoints behind the cookie: a live session, so the body is read.
                if as_browser {
                    builder = builder
                        .header("cookie", &browser.cookie)
                        .header("origin", ORIGIN)
                        .header("sec-fetch-site", "same-origin")
                        .header("x-csrf-token", &browser.csrf);
                }
                let r = app
                    .send(builder.body(Body::from(body.clone())).expect("request"))
                    .await;
                standard_answer(
                    &format!(
                        "POST {path} ({content_type:?}) {:?}",
                        String::from_utf8_lossy(&body)
                    ),
                    &r,
                )
            })
        },
    );
    // The browser session is still the user's: no random body changed the password or logged
    // it out.
    rt.block_on(async {
        let r = app
            .call("GET", "/v1/session", &[("cookie", &browser.cookie)], None)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = app.password_grant("props-body", PASSWORD, "spa").await;
        assert_eq!(r.status, 200, "{}", r.text());
    });
}

/// Arbitrary Cookie headers at the cookie endpoints, and arbitrary query strings at the feed:
/// standard answers only; a non-negative integer cursor is a 200 whose cursor is at least it,
/// anything else for `after` a 400 `invalid_request`.
#[test]
fn cookies_and_feed_cursors_get_standard_answers() {
    let rt = runtime();
    let app = rt.block_on(TestApp::new());
    let cursor = prop_oneof![
        (0i64..=i64::MAX).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[0-9+-]{0,25}",
        "[ -~]{0,20}",
        ".{0,10}",
    ];
    let query = prop_oneof![
        cursor
            .clone()
            .prop_map(|c| format!("after={}", form_encode(&c, &[]))),
        (cursor.clone(), cursor.clone()).prop_map(|(a, b)| format!(
            "after={}&after={}",
            form_encode(&a, &[]),
            form_encode(&b, &[])
        )),
        "[!-~&&[^#]]{0,40}",
        (cursor, "[a-z]{1,6}").prop_map(|(c, k)| format!("{k}=1&after={}", form_encode(&c, &[]))),
    ];
    let cookie = prop_oneof![
        "[ -~]{0,120}",
        "__Host-latchkey=[ -~&&[^;]]{0,60}",
        "__Host-latchkey=[A-Za-z0-9_-]{43}",
        "(__Host-latchkey=[A-Za-z0-9_-]{43}; ?){2}",
    ];
    check(
        "cookies_and_feed_cursors_get_standard_answers",
        (query, cookie),
        |(query, cookie)| {
            rt.block_on(async {
                let uri = format!("/v1/revocations?{query}");
                let Ok(request) = Request::builder()
                    .method(Method::GET)
                    .uri(&uri)
                    .body(Body::empty())
                else {
                    return Ok(()); // not a URI a client could send
                };
                let r = app.send(request).await;
                standard_answer(&uri, &r)?;
                // One `after` that is a non-negative integer: 200, cursor at least it.
                let afters: Vec<(String, String)> =
                    serde_urlencoded::from_str(&query).unwrap_or_default();
                let afters: Vec<&String> = afters
                    .iter()
                    .filter(|(k, _)| k == "after")
                    .map(|(_, v)| v)
                    .collect();
                if let [after] = afters.as_slice()
                    && let Ok(n) = after.trim().parse::<i64>()
                    && n >= 0
                {
                    prop_assert_eq!(r.status.as_u16(), 200, "{}: {}", uri, r.text());
                    prop_assert!(r.json()["cursor"].as_i64().is_some_and(|c| c >= n));
                } else if !afters.is_empty() && r.status != 200 {
                    prop_assert_eq!(r.status.as_u16(), 400, "{}: {}", uri, r.text());
                }

                for (method, path) in [
                    ("GET", "/v1/session"),
                    ("DELETE", "/v1/session"),
                    ("GET", "/v1/sessions"),
                    ("GET", "/v1/me"),
                ] {
                    let Ok(value) = HeaderValue::from_str(&cookie) else {
                        return Ok(());
                    };
                    let request = Request::builder()
                        .method(method)
                        .uri(path)
                        .header("cookie", value)
                        .header("origin", ORIGIN)
                        .body(Body::empty())
                        .expect("request");
                    let r = app.send(request).await;
                    prop_assert_ne!(
                        r.status.as_u16(),
                        200,
                        "{} {} with {:?}",
                        method,
                        path,
                        cookie
                    );
                    standard_answer(&format!("{method} {path} cookie {cookie:?}"), &r)?;
                }
                Ok(())
            })
        },
    );
}

// ---------------------------------------------------------------------------------------------
// BFF paths.

/// An independent statement of what `check_rest` must guarantee for a path it accepts.
fn safe_for_upstream(rest: &str) -> Result<(), String> {
    fn decode(s: &str) -> Option<String> {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).ok()
    }
    let segments: Vec<&str> = rest.split('/').collect();
    for (i, raw) in segments.iter().enumerate() {
        if raw.is_empty() {
            if i + 1 != segments.len() && !rest.is_empty() {
                return Err(format!("empty segment {i}"));
            }
            continue;
        }
        if raw.bytes().any(|b| b <= 0x20 || b >= 0x7f || b == b'\\') {
            return Err(format!("raw byte in {raw:?}"));
        }
        let mut forms = vec![raw.to_string()];
        let mut current = raw.to_string();
        // Whatever an upstream decoding once or twice makes of it.
        for _ in 0..2 {
            match decode(&current) {
                Some(d) if d != current => {
                    forms.push(d.clone());
                    current = d;
                }
                _ => break,
            }
        }
        for form in forms {
            let name = form.split(';').next().unwrap_or("");
            if name == "." || name == ".." {
                return Err(format!("dot segment {raw:?}"));
            }
            if form.contains(['/', '\\']) || form.chars().any(char::is_control) {
                return Err(format!("separator or control in {raw:?} -> {form:?}"));
            }
        }
    }
    Ok(())
}

/// `check_rest` never panics; every path it accepts is safe by an independent check; every
/// ordinary path (plain names, dots inside names, escapes of ordinary characters) passes.
#[test]
fn bff_paths() {
    let tricky = proptest::collection::vec(
        prop_oneof![
            Just("."),
            Just(".."),
            Just("/"),
            Just("\\"),
            Just("%2e"),
            Just("%2E"),
            Just("%2f"),
            Just("%5c"),
            Just("%25"),
            Just("%252e"),
            Just("%00"),
            Just(";"),
            Just("a"),
            Just("%"),
            Just("2"),
            Just("e"),
            Just("%c0%ae"),
            Just(" "),
        ],
        0..12,
    )
    .prop_map(|parts| parts.concat());
    let ordinary = proptest::collection::vec(
        prop_oneof![
            "[A-Za-z0-9_~-]{1,8}",
            "[A-Za-z0-9]{1,4}\\.[A-Za-z0-9]{1,4}",
            "\\.{3,4}",
            "%[46][1-9A-F]",
            "[a-z]{1,4};[a-z]=[0-9]",
        ],
        1..5,
    )
    .prop_map(|segments| segments.join("/"));
    check(
        "bff_paths",
        (
            prop_oneof![tricky, "[ -~]{0,40}", ".{0,20}"],
            ordinary,
            any::<bool>(),
        ),
        |(path, ordinary, slash)| {
            if check_rest(&path).is_ok() {
                prop_assert_eq!(safe_for_upstream(&path), Ok(()), "accepted {:?}", path);
            }
            let ordinary = if slash {
                format!("{ordinary}/")
            } else {
                ordinary
            };
            prop_assert_eq!(check_rest(&ordinary), Ok(()), "refused {:?}", ordinary);
            Ok(())
        },
    );
}
