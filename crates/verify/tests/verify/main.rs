//! latchkey-verify against a fake Latchkey (axum on 127.0.0.1:0): strict verification with
//! forged tokens, key rotation and the JWKS refresh rate limit, the revocation feed (latency,
//! expiry, staleness), the tower layer and the axum extractor. One test binary.

mod fake;

use std::time::{Duration, Instant};

use aws_lc_rs::{
    hmac,
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair},
};
use axum::{
    Extension, Router,
    body::{Body, to_bytes},
    http::{Request, StatusCode, header},
    routing::get,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use fake::{AUDIENCE, FakeLatchkey, new_key, now};
use latchkey_tokens::{Algorithm, IdTokenClaims, KeyRing, SigningKey};
use latchkey_verify::{
    AccessToken, Claims, ClaimsExt as _, Error, TokenRejection, Verifier, VerifierConfig,
    VerifyError,
};
use serde_json::{Value, json};
use tower::ServiceExt as _;

// ---------------------------------------------------------------------------------------------
// helpers

fn config(fake: &FakeLatchkey) -> VerifierConfig {
    VerifierConfig::new(fake.issuer.clone(), AUDIENCE)
}

async fn start(fake: &FakeLatchkey) -> Verifier {
    Verifier::start(config(fake))
        .await
        .expect("verifier starts")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Ed25519 signature by `key` over `message`, with aws-lc-rs directly.
fn ed25519_sign(key: &SigningKey, message: &[u8]) -> Vec<u8> {
    Ed25519KeyPair::from_pkcs8(key.private_pkcs8_der())
        .expect("ed25519 key")
        .sign(message)
        .as_ref()
        .to_vec()
}

/// A compact JWS with exactly this header and payload, validly signed by Ed25519 `key`.
fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = ed25519_sign(key, input.as_bytes());
    format!("{input}.{}", b64(signature))
}

fn header_of(key: &SigningKey) -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid()})
}

fn payload_of(fake: &FakeLatchkey, sid: &str) -> Value {
    serde_json::to_value(fake.claims(sid)).expect("claims")
}

fn with(mut value: Value, name: &str, new: Value) -> Value {
    value[name] = new;
    value
}

fn invalid(reason: TokenRejection) -> Result<Claims, VerifyError> {
    Err(VerifyError::InvalidToken(reason))
}

/// Waits until `cond` holds, checking every 10 ms; panics after `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl AsyncFnMut() -> bool) -> Duration {
    let started = Instant::now();
    while started.elapsed() < limit {
        if cond().await {
            return started.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what}: not within {limit:?}");
}

// ---------------------------------------------------------------------------------------------
// strict verification

#[tokio::test]
async fn valid_token_is_accepted() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let claims = fake.claims("sess-ok");
    let token = fake.sign_with(&fake.key(), &claims);
    let got = verifier.verify(&token).await.expect("accepted");
    assert_eq!(got, claims);
    assert!(got.has_scope("read") && got.has_scope("write") && !got.has_scope("admin"));
    assert!(!got.has_scope("") && !got.has_scope("read write"));
    assert_eq!(got.scopes().collect::<Vec<_>>(), ["read", "write"]);
    let status = verifier.status();
    assert_eq!(status.keys, 1);
    assert_eq!(status.jwks_fetches, 1);
    assert!(!status.stale);
    // An ES256 key works the same.
    let ec = new_key(Algorithm::ES256);
    fake.publish(&ec);
    verifier.refresh_keys().await.expect("refresh");
    let token = fake.sign_with(&ec, &fake.claims("sess-ec"));
    assert!(verifier.verify(&token).await.is_ok());
}

/// Latchkey publishes its RS256 ID-token keys in the same JWKS: EdDSA access tokens still
/// verify, and an access token naming the RSA key is refused without another JWKS fetch.
#[tokio::test]
async fn jwks_mixing_ed25519_and_rsa_keys_still_verifies_access_tokens() {
    let fake = FakeLatchkey::start().await;
    let rsa = new_key(Algorithm::RS256);
    fake.publish(&rsa);
    let verifier = start(&fake).await;
    assert_eq!(verifier.status().keys, 2);
    let claims = fake.claims("sess-mixed");
    let token = fake.sign_with(&fake.key(), &claims);
    assert_eq!(verifier.verify(&token).await, Ok(claims));

    // Really signed by the RSA key (RSASSA-PKCS1-v1_5, SHA-256), with its kid and alg RS256:
    // not an access token Latchkey could have issued.
    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa.kid()});
    let input = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(payload_of(&fake, "sess-rsa").to_string())
    );
    let pair = RsaKeyPair::from_pkcs8(rsa.private_pkcs8_der()).expect("rsa key");
    let mut signature = vec![0; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &SystemRandom::new(),
        input.as_bytes(),
        &mut signature,
    )
    .expect("sign");
    let forged = format!("{input}.{}", b64(signature));
    assert_eq!(
        verifier.verify(&forged).await,
        invalid(TokenRejection::WrongAlgorithm)
    );

    // An ID token from that key (typ JWT) is no access token either.
    let ring = KeyRing::with_signers(
        vec![fake.key(), rsa.clone()],
        fake.key().kid(),
        &[rsa.kid()],
    )
    .expect("ring");
    let now = now();
    let id_token = ring
        .sign_id_token(
            &IdTokenClaims {
                iss: fake.issuer.clone(),
                sub: "user-1".into(),
                aud: AUDIENCE.into(),
                exp: now + 900,
                iat: now,
                auth_time: now,
                nonce: None,
                sid: "sess-id".into(),
                at_hash: None,
                azp: None,
            },
            Algorithm::RS256,
        )
        .expect("sign");
    assert_eq!(
        verifier.verify(&id_token).await,
        invalid(TokenRejection::WrongType)
    );
    // None of it sent the verifier back to the JWKS.
    assert_eq!(fake.jwks_hits(), 1);
}

#[tokio::test]
async fn alg_none_and_other_algorithms_are_refused() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let key = fake.key();
    let payload = payload_of(&fake, "s");
    for alg in [
        "none", "None", "NONE", "nOnE", "HS256", "RS256", "ES256", "eddsa", "",
    ] {
        let header = with(header_of(&key), "alg", json!(alg));
        // Signed with the real key anyway: only `alg` is wrong.
        let signed = forge(&key, &header, &payload);
        assert_eq!(
            verifier.verify(&signed).await,
            invalid(TokenRejection::WrongAlgorithm),
            "{alg}"
        );
        // The classic unsigned forms.
        let unsigned = format!("{}.{}.", b64(header.to_string()), b64(payload.to_string()));
        assert_eq!(
            verifier.verify(&unsigned).await,
            invalid(TokenRejection::Malformed)
        );
        let two = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        assert_eq!(
            verifier.verify(&two).await,
            invalid(TokenRejection::Malformed)
        );
    }
    // None of that made the verifier fetch anything.
    assert_eq!(fake.jwks_hits(), 1);
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let key = fake.key();
    let jwk = key.public_jwk();
    let raw_public = Ed25519KeyPair::from_pkcs8(key.private_pkcs8_der())
        .expect("key")
        .public_key()
        .as_ref()
        .to_vec();
    let jwk_json = serde_json::to_string(&jwk).expect("jwk");
    let header = with(header_of(&key), "alg", json!("HS256"));
    let input = format!(
        "{}.{}",
        b64(header.to_string()),
        b64(payload_of(&fake, "s").to_string())
    );
    for secret in [raw_public.as_slice(), jwk_json.as_bytes(), jwk.x.as_bytes()] {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
        let token = format!("{input}.{}", b64(tag));
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::WrongAlgorithm)
        );
    }
}

#[tokio::test]
async fn key_carrying_headers_are_refused() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let key = fake.key();
    let attacker = new_key(Algorithm::EdDSA);
    let attacker_jwk = serde_json::to_value(attacker.public_jwk()).expect("jwk");
    let payload = payload_of(&fake, "s");
    let cases = [
        ("jwk", attacker_jwk.clone()),
        (
            "jku",
            json!(format!("{}/.well-known/jwks.json", fake.issuer)),
        ),
        ("jku", json!("https://evil.example/jwks.json")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIU"])),
        ("crit", json!(["exp"])),
    ];
    for (name, value) in cases {
        // Signed by the real key: the extra parameter alone is refused.
        let token = forge(&key, &with(header_of(&key), name, value.clone()), &payload);
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::UnsupportedHeader(name)),
            "{name}"
        );
    }
    // The embedded-key attack: the attacker's own key, named and embedded.
    let token = forge(
        &attacker,
        &with(header_of(&attacker), "jwk", attacker_jwk),
        &payload,
    );
    assert_eq!(
        verifier.verify(&token).await,
        invalid(TokenRejection::UnsupportedHeader("jwk"))
    );
    // Never a fetch of anything the token names.
    assert_eq!(fake.jwks_hits(), 1);
}

#[tokio::test]
async fn kid_injection_strings_are_only_looked_up() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let key = fake.key();
    let real = key.kid().to_owned();
    let payload = payload_of(&fake, "s");
    let unknown = [
        "../../../../etc/passwd".to_owned(),
        "/dev/null".to_owned(),
        "' OR '1'='1".to_owned(),
        "x'; DROP TABLE signing_keys; --".to_owned(),
        "http://127.0.0.1:1/jwks.json".to_owned(),
        format!("{real}\u{0}"),
        format!("{real} "),
        real.to_uppercase(),
        real[..real.len() - 1].to_owned(),
        "*".to_owned(),
    ];
    for kid in unknown {
        let token = forge(&key, &with(header_of(&key), "kid", json!(kid)), &payload);
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::UnknownKey),
            "{kid:?}"
        );
    }
    for kid in [json!(""), Value::Null, json!("k".repeat(129))] {
        let token = forge(&key, &with(header_of(&key), "kid", kid), &payload);
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::InvalidKeyId)
        );
    }
    for kid in [json!(1), json!([real]), json!({"kid": real})] {
        let token = forge(&key, &with(header_of(&key), "kid", kid), &payload);
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::Malformed)
        );
    }
    // Ten unknown kids within the rate-limit interval (30 s by default, counted from the
    // fetch at start): not one more JWKS fetch.
    assert_eq!(fake.jwks_hits(), 1);
}

#[tokio::test]
async fn tampered_tokens_are_refused() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let token = fake.token("s");
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(with(payload_of(&fake, "s"), "sub", json!("admin")).to_string());
    let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
    assert_eq!(
        verifier.verify(&tampered).await,
        invalid(TokenRejection::BadSignature)
    );
    // Signed by another key that claims the real kid.
    let impostor = new_key(Algorithm::EdDSA);
    let token = forge(&impostor, &header_of(&fake.key()), &payload_of(&fake, "s"));
    assert_eq!(
        verifier.verify(&token).await,
        invalid(TokenRejection::BadSignature)
    );
    // Signature of a different message.
    let other = fake.token("other");
    let spliced = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        other.rsplit('.').next().expect("sig")
    );
    assert_eq!(
        verifier.verify(&spliced).await,
        invalid(TokenRejection::BadSignature)
    );
}

#[tokio::test]
async fn lifetime_is_checked_with_the_leeway() {
    let fake = FakeLatchkey::start().await;
    let verifier = Verifier::start(VerifierConfig {
        leeway: Duration::from_secs(30),
        ..config(&fake)
    })
    .await
    .expect("start");
    let key = fake.key();
    let at = |exp: i64, nbf: i64, iat: i64| {
        let p = payload_of(&fake, "s");
        let p = with(
            with(with(p, "exp", json!(exp)), "nbf", json!(nbf)),
            "iat",
            json!(iat),
        );
        forge(&key, &header_of(&key), &p)
    };
    let now = now();
    assert_eq!(
        verifier
            .verify(&at(now - 120, now - 1000, now - 1000))
            .await,
        invalid(TokenRejection::Expired)
    );
    assert!(
        verifier
            .verify(&at(now - 10, now - 1000, now - 1000))
            .await
            .is_ok()
    );
    assert_eq!(
        verifier.verify(&at(now + 900, now + 120, now)).await,
        invalid(TokenRejection::NotYetValid)
    );
    assert_eq!(
        verifier.verify(&at(now + 900, now, now + 120)).await,
        invalid(TokenRejection::NotYetValid)
    );
    assert!(
        verifier
            .verify(&at(now + 900, now + 10, now + 10))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn wrong_issuer_audience_type_and_claims_are_refused() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let key = fake.key();
    let payload = payload_of(&fake, "s");
    let header = header_of(&key);
    for iss in ["https://evil.example", &format!("{}/", fake.issuer), ""] {
        let token = forge(&key, &header, &with(payload.clone(), "iss", json!(iss)));
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::WrongIssuer),
            "{iss}"
        );
    }
    for aud in [json!("other"), json!("API"), json!(["a", "b"]), json!([])] {
        let token = forge(&key, &header, &with(payload.clone(), "aud", aud));
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::WrongAudience)
        );
    }
    let token = forge(
        &key,
        &header,
        &with(payload.clone(), "aud", json!(["x", AUDIENCE])),
    );
    assert!(verifier.verify(&token).await.is_ok());
    for typ in [json!("JWT"), json!("jwt"), json!("dpop+jwt"), Value::Null] {
        let token = forge(&key, &with(header.clone(), "typ", typ), &payload);
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::WrongType)
        );
    }
    let mut no_sid = payload.clone();
    no_sid.as_object_mut().expect("object").remove("sid");
    let token = forge(&key, &header, &no_sid);
    assert_eq!(
        verifier.verify(&token).await,
        invalid(TokenRejection::MissingClaim("sid"))
    );
}

#[tokio::test]
async fn json_serializations_and_garbage_are_malformed() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let token = fake.token("s");
    let parts: Vec<&str> = token.split('.').collect();
    let flattened = json!({"protected": parts[0], "payload": parts[1], "signature": parts[2]});
    let general = json!({
        "payload": parts[1],
        "signatures": [{"protected": parts[0], "signature": parts[2]}],
    });
    for text in [
        flattened.to_string(),
        general.to_string(),
        String::new(),
        "Bearer x.y.z".into(),
        format!("{token}.{}", parts[2]),
        format!("{token} "),
    ] {
        assert_eq!(
            verifier.verify(&text).await,
            invalid(TokenRejection::Malformed),
            "{text}"
        );
    }
}

#[tokio::test]
async fn a_one_megabyte_token_is_refused_unread() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let huge = format!("{}.{}", fake.token("s"), "A".repeat(1 << 20));
    assert_eq!(
        verifier.verify(&huge).await,
        invalid(TokenRejection::TooLong)
    );
    assert_eq!(
        verifier.verify(&".".repeat(1 << 20)).await,
        invalid(TokenRejection::TooLong)
    );
}

// ---------------------------------------------------------------------------------------------
// keys: rotation and the refresh rate limit

#[tokio::test]
async fn rotated_key_is_fetched_once_and_accepted() {
    let fake = FakeLatchkey::start().await;
    let interval = Duration::from_millis(300);
    let verifier = Verifier::start(VerifierConfig {
        jwks_min_refresh_interval: interval,
        ..config(&fake)
    })
    .await
    .expect("start");
    assert_eq!(fake.jwks_hits(), 1);
    let old_token = fake.token("s");

    // Latchkey pre-publishes a new key and starts signing with it.
    let new = new_key(Algorithm::EdDSA);
    fake.publish(&new);
    tokio::time::sleep(interval).await;
    let new_token = fake.sign_with(&new, &fake.claims("s"));
    assert!(
        verifier.verify(&new_token).await.is_ok(),
        "new key after one refresh"
    );
    assert_eq!(fake.jwks_hits(), 2, "exactly one refresh");
    assert!(verifier.verify(&new_token).await.is_ok());
    assert!(
        verifier.verify(&old_token).await.is_ok(),
        "old key still published"
    );
    assert_eq!(fake.jwks_hits(), 2, "known keys never fetch");
    assert_eq!(verifier.status().keys, 2);

    // The old key is retired: after the next refresh its tokens fail.
    fake.unpublish(fake.key().kid());
    verifier.refresh_keys().await.expect("refresh");
    assert_eq!(
        verifier.verify(&old_token).await,
        invalid(TokenRejection::UnknownKey)
    );
    assert!(verifier.verify(&new_token).await.is_ok());
}

#[tokio::test]
async fn unknown_kid_storm_refreshes_at_most_once_per_interval() {
    let fake = FakeLatchkey::start().await;
    let interval = Duration::from_secs(2);
    let verifier = Verifier::start(VerifierConfig {
        jwks_min_refresh_interval: interval,
        ..config(&fake)
    })
    .await
    .expect("start");
    tokio::time::sleep(interval).await;
    let key = fake.key();
    let payload = payload_of(&fake, "s");
    let started = Instant::now();
    // 200 concurrent requests, each with its own random kid, then more one after another.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let verifier = verifier.clone();
        let token = forge(
            &key,
            &with(header_of(&key), "kid", json!(format!("bogus-{i}"))),
            &payload,
        );
        tasks.push(tokio::spawn(async move { verifier.verify(&token).await }));
    }
    for task in tasks {
        assert_eq!(
            task.await.expect("task"),
            invalid(TokenRejection::UnknownKey)
        );
    }
    while started.elapsed() < interval - Duration::from_millis(500) {
        let token = forge(
            &key,
            &with(header_of(&key), "kid", json!("bogus-seq")),
            &payload,
        );
        assert_eq!(
            verifier.verify(&token).await,
            invalid(TokenRejection::UnknownKey)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.jwks_hits(),
        2,
        "start + one refresh for the whole storm"
    );
    // Once the interval has passed, one more.
    tokio::time::sleep(interval).await;
    let token = forge(
        &key,
        &with(header_of(&key), "kid", json!("bogus-later")),
        &payload,
    );
    assert_eq!(
        verifier.verify(&token).await,
        invalid(TokenRejection::UnknownKey)
    );
    assert_eq!(fake.jwks_hits(), 3);
    // Still-valid tokens were never affected.
    assert!(verifier.verify(&fake.token("s")).await.is_ok());
}

#[tokio::test]
async fn jwks_failures_keep_the_current_keys() {
    let fake = FakeLatchkey::start().await;
    let verifier = Verifier::start(VerifierConfig {
        jwks_min_refresh_interval: Duration::from_millis(100),
        ..config(&fake)
    })
    .await
    .expect("start");
    fake.set_jwks_down(true);
    assert!(verifier.refresh_keys().await.is_err());
    tokio::time::sleep(Duration::from_millis(150)).await;
    let unknown = forge(
        &fake.key(),
        &with(header_of(&fake.key()), "kid", json!("nope")),
        &payload_of(&fake, "s"),
    );
    assert_eq!(
        verifier.verify(&unknown).await,
        invalid(TokenRejection::UnknownKey)
    );
    assert!(verifier.verify(&fake.token("s")).await.is_ok());
}

#[tokio::test]
async fn start_fails_without_a_usable_jwks() {
    let fake = FakeLatchkey::start().await;
    fake.set_jwks_down(true);
    let err = Verifier::start(config(&fake)).await.expect_err("no JWKS");
    assert!(matches!(err, Error::Fetch { .. }), "{err}");
    assert!(err.to_string().contains("jwks.json"), "{err}");
    fake.set_jwks_down(false);
    fake.unpublish(fake.key().kid());
    let err = Verifier::start(config(&fake)).await.expect_err("no key");
    assert!(matches!(err, Error::Jwks { .. }), "{err}");
    let err = Verifier::start(VerifierConfig {
        leeway: Duration::from_secs(61),
        ..config(&fake)
    })
    .await
    .expect_err("leeway");
    assert!(matches!(err, Error::Config(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// the revocation feed

#[tokio::test]
async fn revoked_session_is_refused_within_a_second() {
    let fake = FakeLatchkey::start().await;
    // Default configuration: 250 ms polling.
    let verifier = start(&fake).await;
    let token = fake.token("sess-revoked");
    let bystander = fake.token("sess-bystander");
    assert!(verifier.verify(&token).await.is_ok());

    let mut worst = Duration::ZERO;
    for round in 0..3 {
        let sid = format!("sess-round-{round}");
        let token = fake.token(&sid);
        assert!(verifier.verify(&token).await.is_ok());
        fake.revoke(&sid, now() + 900);
        let took = eventually(Duration::from_secs(2), "revocation seen", async || {
            verifier.verify(&token).await == Err(VerifyError::Revoked)
        })
        .await;
        worst = worst.max(took);
    }
    fake.revoke("sess-revoked", now() + 900);
    eventually(Duration::from_secs(2), "revocation seen", async || {
        verifier.is_revoked("sess-revoked")
    })
    .await;
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Revoked));
    assert!(verifier.verify(&bystander).await.is_ok());
    println!("revocation reached the verifier in at most {worst:?}");
    assert!(worst < Duration::from_secs(1), "took {worst:?}");
    assert!(verifier.status().cursor >= 4);
}

/// A role removal (docs/decisions/0011): `{"sid","exp","iat_before"}` refuses the session's
/// tokens issued before `iat_before`, within a second, and only those.
#[tokio::test]
async fn role_removal_refuses_only_older_tokens_of_the_session() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let now = now();
    let mut before = fake.claims("sess-roles");
    before.iat = now - 5;
    before.nbf = now - 5;
    let old = fake.sign_with(&fake.key(), &before);
    let mut after = fake.claims("sess-roles");
    after.iat = now;
    after.nbf = now;
    let fresh = fake.sign_with(&fake.key(), &after);
    let bystander = fake.token("sess-bystander");
    assert!(verifier.verify(&old).await.is_ok());

    let started = std::time::Instant::now();
    fake.mark_stale("sess-roles", now + 900, now - 2);
    eventually(Duration::from_secs(2), "stale entry seen", async || {
        verifier.verify(&old).await == Err(VerifyError::Revoked)
    })
    .await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        verifier.verify(&fresh).await.is_ok(),
        "minted after the change"
    );
    assert!(verifier.verify(&bystander).await.is_ok());
    assert!(
        !verifier.is_revoked("sess-roles"),
        "the session is not revoked"
    );
    // A full revocation of the same session still refuses every token.
    fake.revoke("sess-roles", now + 900);
    eventually(Duration::from_secs(2), "revocation seen", async || {
        verifier.verify(&fresh).await == Err(VerifyError::Revoked)
    })
    .await;
}

#[tokio::test]
async fn catch_up_at_start_covers_earlier_revocations_across_pages() {
    let fake = FakeLatchkey::start().await;
    for i in 0..2500 {
        fake.revoke(&format!("early-{i}"), now() + 900);
    }
    let verifier = start(&fake).await;
    // Read before `start` returned, through three pages of 1000.
    assert_eq!(verifier.status().revoked_sessions, 2500);
    assert_eq!(verifier.status().cursor, 2500);
    let token = fake.token("early-1234");
    assert_eq!(verifier.verify(&token).await, Err(VerifyError::Revoked));
}

#[tokio::test]
async fn events_past_their_exp_are_forgotten() {
    let fake = FakeLatchkey::start().await;
    let verifier = Verifier::start(VerifierConfig {
        leeway: Duration::ZERO,
        feed_poll_interval: Duration::from_millis(50),
        ..config(&fake)
    })
    .await
    .expect("start");
    let now = now();
    fake.revoke("long-gone", now - 120);
    fake.revoke("soon-gone", now + 1);
    fake.revoke("live", now + 900);
    eventually(Duration::from_secs(2), "events read", async || {
        verifier.status().cursor == 3
    })
    .await;
    assert!(
        !verifier.is_revoked("long-gone"),
        "expired before it arrived"
    );
    assert!(verifier.is_revoked("soon-gone"));
    assert!(verifier.is_revoked("live"));
    eventually(
        Duration::from_secs(4),
        "expired event dropped",
        async || !verifier.is_revoked("soon-gone"),
    )
    .await;
    assert!(verifier.is_revoked("live"));
    assert_eq!(verifier.status().revoked_sessions, 1);
}

#[tokio::test]
async fn stale_feed_fails_closed_and_fail_open_is_opt_in() {
    let fake = FakeLatchkey::start().await;
    let fast = |fail_open| VerifierConfig {
        feed_poll_interval: Duration::from_millis(50),
        feed_max_staleness: Duration::from_millis(500),
        fail_open_when_feed_stale: fail_open,
        ..config(&fake)
    };
    let closed = Verifier::start(fast(false)).await.expect("start");
    let open = Verifier::start(fast(true)).await.expect("start");
    let token = fake.token("s");
    assert!(closed.verify(&token).await.is_ok());

    fake.set_feed_down(true);
    let took = eventually(Duration::from_secs(2), "fails closed", async || {
        closed.verify(&token).await == Err(VerifyError::FeedStale)
    })
    .await;
    assert!(took >= Duration::from_millis(300), "too early: {took:?}");
    assert!(closed.status().stale);
    assert!(open.status().stale);
    assert_eq!(open.verify(&token).await.map(|c| c.sid), Ok("s".to_owned()));
    // A bad token is still a 401, not a 503.
    assert_eq!(
        closed.verify("x.y.z").await,
        invalid(TokenRejection::Malformed)
    );

    fake.set_feed_down(false);
    eventually(Duration::from_secs(3), "recovers", async || {
        closed.verify(&token).await.is_ok()
    })
    .await;
    assert!(!closed.status().stale);
}

#[tokio::test]
async fn unreachable_feed_at_start() {
    let fake = FakeLatchkey::start().await;
    // A port nothing listens on.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let unreachable = |fail_open| VerifierConfig {
        feed_url: Some(format!("http://127.0.0.1:{closed_port}/v1/revocations")),
        fail_open_when_feed_stale: fail_open,
        ..config(&fake)
    };
    let err = Verifier::start(unreachable(false))
        .await
        .expect_err("fails closed");
    assert!(matches!(err, Error::Fetch { .. }), "{err}");
    let open = Verifier::start(unreachable(true))
        .await
        .expect("fail-open starts");
    assert!(open.status().stale);
    assert_eq!(open.status().since_last_success, None);
    assert!(open.verify(&fake.token("s")).await.is_ok());
}

#[tokio::test]
async fn feed_token_is_sent_as_bearer() {
    let fake = FakeLatchkey::start().await;
    fake.require_feed_token("feed-secret");
    let err = Verifier::start(config(&fake)).await.expect_err("no token");
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!format!("{err:?}").contains("feed-secret"));
    let verifier = Verifier::start(VerifierConfig {
        feed_token: Some("feed-secret".into()),
        ..config(&fake)
    })
    .await
    .expect("with the token");
    assert!(verifier.verify(&fake.token("s")).await.is_ok());
    assert!(!format!("{verifier:?}").contains("feed-secret"));
}

#[tokio::test]
async fn dropping_the_verifier_stops_polling() {
    let fake = FakeLatchkey::start().await;
    let verifier = Verifier::start(VerifierConfig {
        feed_poll_interval: Duration::from_millis(20),
        ..config(&fake)
    })
    .await
    .expect("start");
    let clone = verifier.clone();
    drop(verifier);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(fake.feed_hits() > 3, "the clone keeps it alive");
    drop(clone);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let hits = fake.feed_hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.feed_hits(),
        hits,
        "still polling after the last handle was dropped"
    );
}

// ---------------------------------------------------------------------------------------------
// the tower layer and the axum extractor

async fn hello(AccessToken(claims): AccessToken) -> String {
    format!("{} {}", claims.sub, claims.scope)
}

fn app(verifier: &Verifier) -> Router {
    Router::new()
        .route("/hello", get(hello))
        .route(
            "/raw",
            get(|Extension(claims): Extension<Claims>| async move { claims.sid }),
        )
        .layer(verifier.layer())
}

async fn call(
    app: &Router,
    authorization: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get("/hello");
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (
        status,
        headers,
        String::from_utf8(body.to_vec()).expect("utf8"),
    )
}

fn error_body(body: &str) -> (String, String) {
    let v: Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{body}");
    (
        v["error"].as_str().expect("error").to_owned(),
        v["error_description"]
            .as_str()
            .expect("description")
            .to_owned(),
    )
}

#[tokio::test]
async fn layer_lets_valid_tokens_through_with_claims() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let app = app(&verifier);
    let token = fake.token("sess-layer");
    let (status, _, body) = call(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "user-1 read write")
    );
    let (status, _, _) = call(&app, Some(&format!("bearer  {token}"))).await;
    assert_eq!(status, StatusCode::OK);
    let response = app
        .clone()
        .oneshot(
            Request::get("/raw")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("infallible");
    let body = to_bytes(response.into_body(), 1024).await.expect("body");
    assert_eq!(&body[..], b"sess-layer");
}

#[tokio::test]
async fn layer_refusals_are_401_with_the_error_body() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let app = app(&verifier);

    let (status, headers, body) = call(&app, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::WWW_AUTHENTICATE], "Bearer");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(error_body(&body).0, "unauthorized");

    let key = fake.key();
    let none = forge(
        &key,
        &with(header_of(&key), "alg", json!("none")),
        &payload_of(&fake, "s"),
    );
    let huge = format!("Bearer {}", "A".repeat(1 << 20));
    let cases = [
        format!("Bearer {none}"),
        "Bearer not-a-token".to_owned(),
        "Bearer ".to_owned(),
        "Basic dXNlcjpwYXNz".to_owned(),
        format!("Bearer {} extra", fake.token("s")),
        huge,
    ];
    for value in &cases {
        let (status, headers, body) = call(&app, Some(value)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{}",
            &value[..value.len().min(40)]
        );
        let challenge = headers[header::WWW_AUTHENTICATE].to_str().expect("ascii");
        assert!(challenge.starts_with("Bearer"), "{challenge}");
        let (code, description) = error_body(&body);
        assert_eq!(code, "unauthorized");
        assert!(!description.is_empty());
        // Never any part of the token in the answer.
        assert!(!body.contains("AAAAAAAA") && !body.contains(&none[..20]));
    }
    let (_, headers, body) = call(&app, Some(&format!("Bearer {none}"))).await;
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .expect("ascii")
            .starts_with("Bearer error=\"invalid_token\"")
    );
    assert_eq!(
        error_body(&body).1,
        "invalid access token: algorithm not accepted for this key"
    );

    // Revoked.
    let token = fake.token("sess-gone");
    fake.revoke("sess-gone", now() + 900);
    eventually(Duration::from_secs(2), "revoked", async || {
        verifier.is_revoked("sess-gone")
    })
    .await;
    let (status, _, body) = call(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_body(&body).1, "session revoked");
}

#[tokio::test]
async fn layer_answers_503_while_failing_closed() {
    let fake = FakeLatchkey::start().await;
    let verifier = Verifier::start(VerifierConfig {
        feed_poll_interval: Duration::from_millis(50),
        feed_max_staleness: Duration::from_millis(300),
        ..config(&fake)
    })
    .await
    .expect("start");
    let app = app(&verifier);
    let auth = format!("Bearer {}", fake.token("s"));
    assert_eq!(call(&app, Some(&auth)).await.0, StatusCode::OK);
    fake.set_feed_down(true);
    eventually(Duration::from_secs(2), "stale", async || {
        verifier.status().stale
    })
    .await;
    let (status, headers, body) = call(&app, Some(&auth)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers[header::RETRY_AFTER], "1");
    assert_eq!(error_body(&body).0, "unavailable");
    // Bad tokens are still 401.
    assert_eq!(
        call(&app, Some("Bearer x.y.z")).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn extractor_verifies_by_itself_with_a_verifier_extension() {
    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    async fn maybe(token: Option<AccessToken>) -> String {
        token.map_or_else(|| "anonymous".to_owned(), |AccessToken(c)| c.sub)
    }
    let app = Router::new()
        .route("/hello", get(hello))
        .route("/maybe", get(maybe))
        .layer(Extension(verifier.clone()));
    let token = fake.token("s");
    let (status, _, body) = call(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "user-1 read write")
    );
    let (status, _, body) = call(&app, Some("Bearer a.b.c")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_body(&body).0, "unauthorized");
    assert_eq!(call(&app, None).await.0, StatusCode::UNAUTHORIZED);

    let get_maybe = |auth: Option<String>| {
        let app = app.clone();
        async move {
            let mut request = Request::get("/maybe");
            if let Some(auth) = auth {
                request = request.header(header::AUTHORIZATION, auth);
            }
            let response = app
                .oneshot(request.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            let status = response.status();
            let body = to_bytes(response.into_body(), 1024).await.expect("body");
            (status, String::from_utf8(body.to_vec()).expect("utf8"))
        }
    };
    assert_eq!(
        get_maybe(None).await,
        (StatusCode::OK, "anonymous".to_owned())
    );
    assert_eq!(
        get_maybe(Some(format!("Bearer {token}"))).await,
        (StatusCode::OK, "user-1".to_owned())
    );
    assert_eq!(
        get_maybe(Some("Bearer bad".into())).await.0,
        StatusCode::UNAUTHORIZED
    );

    // Without layer or extension: refused (and logged), never let through.
    let bare = Router::new().route("/hello", get(hello));
    let (status, _, _) = call(&bare, Some(&format!("Bearer {token}"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// Over a real socket: hyper itself refuses a 1 MB header (431) before the layer sees it;
/// whatever answers, it is a 4xx and the server keeps serving.
#[tokio::test]
async fn huge_header_over_a_socket_is_a_4xx() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let fake = FakeLatchkey::start().await;
    let verifier = start(&fake).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = app(&verifier);
    tokio::spawn(async move { axum::serve(listener, server).await.expect("serve") });

    async fn raw(addr: std::net::SocketAddr, auth: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /hello HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
        );
        // The server may stop reading (and answer) before the whole request is sent.
        let _ = stream.write_all(request.as_bytes()).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }
    for size in [9 * 1024, 64 * 1024, 1 << 20] {
        let answer = raw(addr, &format!("Bearer {}", "A".repeat(size))).await;
        let status = answer.get(9..12).unwrap_or("");
        assert!(
            status.starts_with('4'),
            "{size}: {}",
            &answer[..answer.len().min(80)]
        );
    }
    let answer = raw(addr, &format!("Bearer {}", fake.token("s"))).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
