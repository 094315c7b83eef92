//! What an access token costs beyond the bare signature: `raw_*` are aws-lc-rs alone on a
//! typical JWS signing input, `*_access_token` are the full `KeyRing` paths (JSON, base64,
//! header and claim checks). Kept short: `cargo bench -p latchkey-tokens` runs in about a minute.

use std::{hint::black_box, time::Duration};

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, ParsedPublicKey, UnparsedPublicKey, VerificationAlgorithm,
    },
};
use criterion::{Criterion, criterion_group, criterion_main};
use latchkey_tokens::{AccessTokenClaims, Algorithm, KeyRing, SigningKey, Validation, new_jti};
use time::OffsetDateTime;

const NOW: i64 = 1_700_000_000;

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://auth.example.test".into(),
        sub: "0192f4c1-7d3a-7b2e-9c61-2f8e5a1b3c4d".into(),
        aud: "api".into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: NOW,
        jti: new_jti(),
        client_id: "spa".into(),
        scope: "read write".into(),
        sid: "0192f4c1-8e4b-7c3f-ad72-3f9f6b2c4d5e".into(),
        roles: Vec::new(),
    }
}

fn bench_alg(c: &mut Criterion, alg: Algorithm, group_name: &str) {
    let created = OffsetDateTime::from_unix_timestamp(NOW).expect("timestamp");
    let key = SigningKey::generate(alg, created).expect("key");
    let ring = KeyRing::new(vec![key.clone()], key.kid()).expect("ring");
    let claims = claims();
    let token = ring.sign(&claims).expect("sign");
    let validation = Validation {
        issuer: claims.iss.clone(),
        audience: Some("api".into()),
        leeway_secs: 1,
        now: NOW,
    };
    assert_eq!(ring.verify(&token, &validation).as_ref(), Ok(&claims));

    // The exact signing input of a real token: same size, same content.
    let signing_input = token
        .rsplit_once('.')
        .expect("three segments")
        .0
        .as_bytes()
        .to_vec();
    let der = key.private_pkcs8_der();

    type RawSigner = Box<dyn Fn(&[u8]) -> Vec<u8>>;
    let (raw_sign, public, verify_alg): (RawSigner, Vec<u8>, &'static dyn VerificationAlgorithm) =
        match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(der).expect("ed25519 key");
                let public = pair.public_key().as_ref().to_vec();
                let sign = move |m: &[u8]| pair.sign(m).as_ref().to_vec();
                (Box::new(sign), public, &ED25519)
            }
            Algorithm::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der)
                    .expect("p256 key");
                let public = pair.public_key().as_ref().to_vec();
                let rng = SystemRandom::new();
                let sign = move |m: &[u8]| pair.sign(&rng, m).expect("sign").as_ref().to_vec();
                (Box::new(sign), public, &ECDSA_P256_SHA256_FIXED)
            }
            Algorithm::RS256 => unreachable!("access tokens are EdDSA or ES256 only"),
        };
    let signature = raw_sign(&signing_input);
    let unparsed = UnparsedPublicKey::new(verify_alg, public.clone());
    unparsed
        .verify(&signing_input, &signature)
        .expect("raw signature verifies");
    let parsed = ParsedPublicKey::new(verify_alg, &public).expect("public key");

    let mut group = c.benchmark_group(group_name);
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3));
    group.bench_function("raw_sign", |b| {
        b.iter(|| raw_sign(black_box(&signing_input)))
    });
    group.bench_function("sign_access_token", |b| {
        b.iter(|| ring.sign(black_box(&claims)).expect("sign"))
    });
    group.bench_function("raw_verify", |b| {
        b.iter(|| unparsed.verify(black_box(&signing_input), black_box(&signature)))
    });
    group.bench_function("raw_verify_parsed_key", |b| {
        b.iter(|| parsed.verify_sig(black_box(&signing_input), black_box(&signature)))
    });
    group.bench_function("verify_access_token", |b| {
        b.iter(|| {
            ring.verify(black_box(&token), black_box(&validation))
                .expect("verify")
        })
    });
    group.finish();
}

fn access_tokens(c: &mut Criterion) {
    bench_alg(c, Algorithm::EdDSA, "eddsa");
    bench_alg(c, Algorithm::ES256, "es256");
}

criterion_group!(benches, access_tokens);
criterion_main!(benches);
