//! What `Verifier::verify` costs beside the bare Ed25519 signature check, in the same run:
//!
//! - `raw_ed25519_verify`: aws-lc-rs alone, parsed public key, on the token's signing input;
//! - `public_key_set_verify`: latchkey-tokens' strict checks (base64, JSON, header, claims);
//! - `verifier_verify`: the whole verifier, with 5,000 revoked sessions in its set and the
//!   feed being followed (every 250 ms) from a fake Latchkey in the background.
//!
//! Target: `verifier_verify` at ≥ 90 % of the raw throughput. Runs in about a minute:
//! `cargo bench -p latchkey-verify`.

#[path = "../tests/verify/fake.rs"]
mod fake;

use std::{
    future::Future,
    hint::black_box,
    pin::pin,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair as _, ParsedPublicKey};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use latchkey_tokens::{PublicKeySet, Validation};
use latchkey_verify::{Verifier, VerifierConfig};

const REVOKED: usize = 5_000;

/// Polls a future once: `verify` with a known key never waits, so it must be ready.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("verify waited"),
    }
}

fn bench(c: &mut Criterion) {
    // One worker thread runs the fake Latchkey and the verifier's feed follower.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (fake, verifier) = runtime.block_on(async {
        let fake = fake::FakeLatchkey::start().await;
        for i in 0..REVOKED {
            fake.revoke(
                &format!("0192f4c1-0000-7000-8000-{i:012}"),
                fake::now() + 3600,
            );
        }
        let verifier = Verifier::start(VerifierConfig::new(fake.issuer.clone(), fake::AUDIENCE))
            .await
            .expect("verifier");
        (fake, verifier)
    });
    assert_eq!(verifier.status().revoked_sessions, REVOKED);

    let key = fake.key();
    let claims = fake.claims("0192f4c1-8e4b-7c3f-ad72-3f9f6b2c4d5e");
    let token = fake.sign_with(&key, &claims);
    assert_eq!(ready(verifier.verify(&token)).as_ref(), Ok(&claims));

    let (signing_input, signature_b64) = token.rsplit_once('.').expect("three segments");
    let signing_input = signing_input.as_bytes().to_vec();
    let signature = URL_SAFE_NO_PAD.decode(signature_b64).expect("base64");
    let public = Ed25519KeyPair::from_pkcs8(key.private_pkcs8_der())
        .expect("key")
        .public_key()
        .as_ref()
        .to_vec();
    let parsed = ParsedPublicKey::new(&ED25519, &public).expect("public key");
    parsed
        .verify_sig(&signing_input, &signature)
        .expect("raw signature verifies");

    let set = PublicKeySet::from_jwks(&latchkey_tokens::JwkSet {
        keys: vec![key.public_jwk()],
    })
    .expect("set");
    let validation = Validation {
        issuer: fake.issuer.clone(),
        audience: Some(fake::AUDIENCE.into()),
        leeway_secs: 30,
        now: fake::now(),
    };

    let mut group = c.benchmark_group("eddsa");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.bench_function("raw_ed25519_verify", |b| {
        b.iter(|| {
            parsed
                .verify_sig(black_box(&signing_input), black_box(&signature))
                .expect("valid")
        })
    });
    group.bench_function("public_key_set_verify", |b| {
        b.iter(|| {
            set.verify(black_box(&token), black_box(&validation))
                .expect("valid")
        })
    });
    group.bench_function("verifier_verify", |b| {
        b.iter(|| ready(verifier.verify(black_box(&token))).expect("valid"))
    });
    group.finish();

    interleaved(
        || {
            parsed
                .verify_sig(black_box(&signing_input), black_box(&signature))
                .expect("valid")
        },
        || {
            ready(verifier.verify(black_box(&token))).expect("valid");
        },
    );
    assert!(!verifier.status().stale, "the feed was followed throughout");
    drop(verifier);
    drop(runtime);
}

/// The same comparison with the two alternating in short batches (ABBA order), so that both see
/// the same machine load: on a busy 2-core machine, criterion's one-after-another runs can land
/// in different load. Prints the verifier's throughput as a share of the raw signature check,
/// from the median of per-round ratios and from the fastest batch of each.
fn interleaved(mut raw: impl FnMut(), mut full: impl FnMut()) {
    const ROUNDS: usize = 100;
    const BATCH: u32 = 100;
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..BATCH {
            f();
        }
        started.elapsed().as_secs_f64() / f64::from(BATCH)
    };
    let (mut ratios, mut raw_best, mut full_best) = (Vec::new(), f64::MAX, f64::MAX);
    for round in 0..ROUNDS {
        let (r, f) = if round % 2 == 0 {
            let r = time(&mut raw);
            (r, time(&mut full))
        } else {
            let f = time(&mut full);
            (time(&mut raw), f)
        };
        ratios.push(r / f);
        raw_best = raw_best.min(r);
        full_best = full_best.min(f);
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ROUNDS / 2];
    println!(
        "interleaved ({ROUNDS} rounds of {BATCH}): raw {:.1} µs, verifier {:.1} µs per token (fastest batches); \
         verifier throughput = {:.1} % of raw (median of rounds), {:.1} % (fastest batches)",
        raw_best * 1e6,
        full_best * 1e6,
        median * 100.0,
        raw_best / full_best * 100.0,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
