//! What an ID token costs to sign (and to check) with each `[id_token] algorithm`: RS256 (the
//! default, what every relying party supports), EdDSA and ES256. One group per operation so the
//! three algorithms sit side by side. Kept short: `cargo bench -p latchkey-tokens --bench
//! id_token` runs in well under a minute.

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_tokens::{
    AccessTokenClaims, Algorithm, IdTokenClaims, IdTokenValidation, KeyRing, SigningKey, at_hash,
    new_jti,
};
use time::OffsetDateTime;

const NOW: i64 = 1_700_000_000;
const ISSUER: &str = "https://auth.example.test";

fn ring() -> KeyRing {
    let created = OffsetDateTime::from_unix_timestamp(NOW).expect("timestamp");
    let keys: Vec<SigningKey> = Algorithm::ALL
        .into_iter()
        .map(|alg| SigningKey::generate(alg, created).expect("key"))
        .collect();
    let kids: Vec<&str> = keys.iter().map(SigningKey::kid).collect();
    KeyRing::with_signers(keys.clone(), kids[0], &kids[1..]).expect("ring")
}

/// A realistic access token to hash into `at_hash`.
fn access_token(ring: &KeyRing) -> String {
    ring.sign(&AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "0192f4c1-7d3a-7b2e-9c61-2f8e5a1b3c4d".into(),
        aud: "api".into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: NOW,
        jti: new_jti(),
        client_id: "spa".into(),
        scope: "openid profile read".into(),
        sid: "0192f4c1-8e4b-7c3f-ad72-3f9f6b2c4d5e".into(),
        roles: Vec::new(),
    })
    .expect("access token")
}

fn claims(access_token: &str, alg: Algorithm) -> IdTokenClaims {
    IdTokenClaims {
        iss: ISSUER.into(),
        sub: "0192f4c1-7d3a-7b2e-9c61-2f8e5a1b3c4d".into(),
        aud: "spa".into(),
        exp: NOW + 900,
        iat: NOW,
        auth_time: NOW - 120,
        nonce: Some("n-0S6_WzA2Mj-8kQ3oYzLr0A".into()),
        sid: "0192f4c1-9f5c-7d40-be83-40a07c3d5e6f".into(),
        at_hash: Some(at_hash(access_token, alg)),
        azp: None,
    }
}

fn id_tokens(c: &mut Criterion) {
    let ring = ring();
    let access = access_token(&ring);
    let validation = IdTokenValidation {
        nonce: Some("n-0S6_WzA2Mj-8kQ3oYzLr0A".into()),
        access_token: Some(access.clone()),
        leeway_secs: 1,
        ..IdTokenValidation::new(ISSUER, "spa", NOW)
    };

    let mut sign = c.benchmark_group("sign_id_token");
    sign.sample_size(20)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3));
    for alg in [Algorithm::RS256, Algorithm::EdDSA, Algorithm::ES256] {
        // What the token endpoint does per ID token: at_hash, JSON, base64, signature.
        sign.bench_function(alg.as_str(), |b| {
            b.iter(|| {
                let claims = claims(black_box(&access), alg);
                ring.sign_id_token(black_box(&claims), alg).expect("sign")
            })
        });
    }
    sign.finish();

    let mut verify = c.benchmark_group("verify_id_token");
    verify
        .sample_size(20)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3));
    for alg in [Algorithm::RS256, Algorithm::EdDSA, Algorithm::ES256] {
        let token = ring
            .sign_id_token(&claims(&access, alg), alg)
            .expect("sign");
        assert!(ring.verify_id_token(&token, &validation).is_ok());
        verify.bench_function(alg.as_str(), |b| {
            b.iter(|| {
                ring.verify_id_token(black_box(&token), black_box(&validation))
                    .expect("verify")
            })
        });
    }
    verify.finish();

    // Key generation happens at rotation only, but RSA's is far slower than the others'.
    let mut generate = c.benchmark_group("generate_key");
    generate
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let created = OffsetDateTime::from_unix_timestamp(NOW).expect("timestamp");
    for alg in [Algorithm::RS256, Algorithm::EdDSA, Algorithm::ES256] {
        generate.bench_function(alg.as_str(), |b| {
            b.iter(|| SigningKey::generate(black_box(alg), created).expect("key"))
        });
    }
    generate.finish();
}

criterion_group!(benches, id_tokens);
criterion_main!(benches);
