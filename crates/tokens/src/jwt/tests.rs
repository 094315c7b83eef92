//! Sign/verify roundtrips and one forged token per refusal rule.
//!
//! Most forged tokens are signed with the ring's own key, so that the rule under test is the
//! only thing wrong with them: if that rule were dropped, the token would verify and the test
//! would fail. `forged_baseline_is_valid` proves the forging helper makes good tokens.

use aws_lc_rs::{
    hmac,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair},
};
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;
use crate::Algorithm;

const ISSUER: &str = "https://auth.example.test";
const NOW: i64 = 1_700_000_000;

fn key(alg: Algorithm) -> SigningKey {
    let created = OffsetDateTime::from_unix_timestamp(NOW).expect("timestamp");
    SigningKey::generate(alg, created).expect("generate key")
}

fn ring_of(key: &SigningKey) -> KeyRing {
    KeyRing::new(vec![key.clone()], key.kid()).expect("ring")
}

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: ISSUER.into(),
        sub: "user-1".into(),
        aud: "api".into(),
        exp: NOW + 900,
        iat: NOW,
        nbf: NOW,
        jti: new_jti(),
        client_id: "spa".into(),
        scope: "read write".into(),
        sid: "sess-1".into(),
        roles: vec!["admin".into()],
    }
}

fn validation() -> Validation {
    Validation {
        issuer: ISSUER.into(),
        audience: Some("api".into()),
        leeway_secs: 1,
        now: NOW,
    }
}

fn header(key: &SigningKey) -> Value {
    json!({"alg": key.algorithm().as_str(), "typ": "at+jwt", "kid": key.kid()})
}

fn payload() -> Value {
    serde_json::to_value(claims()).expect("claims json")
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token with exactly this header and payload text, validly signed by `key`.
fn forge_raw(key: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let signature = key.sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(signature))
}

fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    forge_raw(key, &header.to_string(), &payload.to_string())
}

/// Forge with `key` and verify against a ring holding only `key`. Every case also goes through
/// a [`PublicKeySet`] read from the ring's published JWKS, which must agree exactly.
fn check(
    key: &SigningKey,
    header: &Value,
    payload: &Value,
) -> Result<AccessTokenClaims, VerifyError> {
    let token = forge(key, header, payload);
    let ring = ring_of(key);
    let result = ring.verify(&token, &validation());
    let public = PublicKeySet::from_jwks(&ring.jwks()).expect("published JWKS reads back");
    assert_eq!(
        public.verify(&token, &validation()),
        result,
        "PublicKeySet disagrees"
    );
    result
}

fn with(mut value: Value, name: &str, new: Value) -> Value {
    value[name] = new;
    value
}

fn without(mut value: Value, name: &str) -> Value {
    value.as_object_mut().expect("object").remove(name);
    value
}

fn segments(token: &str) -> Vec<String> {
    token.split('.').map(str::to_owned).collect()
}

#[test]
fn sign_then_verify_roundtrip() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let claims = claims();
        let token = ring.sign(&claims).expect("sign");
        assert_eq!(ring.verify(&token, &validation()), Ok(claims.clone()));
        // Any audience when none is required.
        let any_aud = Validation::new(ISSUER, NOW);
        assert_eq!(ring.verify(&token, &any_aud), Ok(claims));
    }
}

#[test]
fn signed_header_is_exactly_alg_typ_kid() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let token = ring_of(&key).sign(&claims()).expect("sign");
        let header = URL_SAFE_NO_PAD
            .decode(&segments(&token)[0])
            .expect("base64");
        assert_eq!(
            String::from_utf8(header).expect("utf8"),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#, key.kid())
        );
        let signature = URL_SAFE_NO_PAD
            .decode(&segments(&token)[2])
            .expect("base64");
        assert_eq!(signature.len(), 64, "{alg}: JWS signatures are 64 bytes");
    }
}

#[test]
fn forged_baseline_is_valid() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        assert!(check(&key, &header(&key), &payload()).is_ok());
    }
}

#[test]
fn stored_key_signs_and_verifies_like_the_original() {
    for alg in Algorithm::ACCESS_TOKEN {
        let original = key(alg);
        let loaded = SigningKey::from_stored(
            original.kid().to_owned(),
            alg,
            original.private_pkcs8_der(),
            original.created_at(),
        )
        .expect("load");
        assert_eq!(loaded.kid(), original.kid());
        let claims = claims();
        let token = ring_of(&loaded).sign(&claims).expect("sign");
        assert_eq!(
            ring_of(&original).verify(&token, &validation()),
            Ok(claims.clone())
        );
        let token = ring_of(&original).sign(&claims).expect("sign");
        assert_eq!(ring_of(&loaded).verify(&token, &validation()), Ok(claims));
    }
}

#[test]
fn rotation_keeps_old_tokens_until_their_key_leaves_the_ring() {
    let old = key(Algorithm::EdDSA);
    let new = key(Algorithm::ES256);
    let old_token = ring_of(&old).sign(&claims()).expect("sign");
    let rotated = KeyRing::new(vec![old.clone(), new.clone()], new.kid()).expect("ring");
    assert_eq!(rotated.signing_key().kid(), new.kid());
    assert_eq!(rotated.keys().len(), 2);
    assert_eq!(rotated.jwks().keys.len(), 2);
    assert!(rotated.verify(&old_token, &validation()).is_ok());
    let new_token = rotated.sign(&claims()).expect("sign");
    assert!(new_token.starts_with(new.header_b64()));
    assert!(rotated.verify(&new_token, &validation()).is_ok());
    assert_eq!(
        ring_of(&new).verify(&old_token, &validation()),
        Err(VerifyError::UnknownKey)
    );
}

#[test]
fn key_ring_construction_errors() {
    let a = key(Algorithm::EdDSA);
    let b = key(Algorithm::EdDSA);
    assert!(matches!(
        KeyRing::new(vec![a.clone()], b.kid()),
        Err(TokenError::SigningKeyNotInRing(_))
    ));
    assert!(matches!(
        KeyRing::new(vec![], a.kid()),
        Err(TokenError::SigningKeyNotInRing(_))
    ));
    let twin = SigningKey::from_stored(
        a.kid().to_owned(),
        Algorithm::EdDSA,
        b.private_pkcs8_der(),
        b.created_at(),
    )
    .expect("load");
    assert!(matches!(
        KeyRing::new(vec![a.clone(), twin], a.kid()),
        Err(TokenError::DuplicateKeyId(_))
    ));
    assert!(KeyRing::new(vec![a.clone(), b], a.kid()).is_ok());
}

#[test]
fn rs256_keys_never_sign_access_tokens() {
    let rsa = key(Algorithm::RS256);
    let ed = key(Algorithm::EdDSA);
    assert!(matches!(
        KeyRing::new(vec![rsa.clone()], rsa.kid()),
        Err(TokenError::NotForAccessTokens(Algorithm::RS256))
    ));
    assert!(matches!(
        KeyRing::with_signers(vec![rsa.clone(), ed.clone()], rsa.kid(), &[ed.kid()]),
        Err(TokenError::NotForAccessTokens(Algorithm::RS256))
    ));
}

/// A perfectly good access token, except that the key its `kid` names is the ring's RS256 key
/// (which really signed it, with `alg: RS256`): refused, by the ring and by the JWKS alike.
#[test]
fn access_token_naming_an_rs256_key_is_refused() {
    let ed = key(Algorithm::EdDSA);
    let rsa = key(Algorithm::RS256);
    let ring =
        KeyRing::with_signers(vec![ed.clone(), rsa.clone()], ed.kid(), &[rsa.kid()]).expect("ring");
    let public = PublicKeySet::from_jwks(&ring.jwks()).expect("JWKS reads back");
    assert_eq!(public.len(), 2);

    let header = json!({"alg": "RS256", "typ": "at+jwt", "kid": rsa.kid()});
    let forged = forge(&rsa, &header, &payload());
    assert_eq!(
        ring.verify(&forged, &validation()),
        Err(VerifyError::WrongAlgorithm)
    );
    assert_eq!(
        public.verify(&forged, &validation()),
        Err(VerifyError::WrongAlgorithm)
    );
    // The same token signed by the EdDSA key under its own kid is fine: only the key differs.
    let good = forge(
        &ed,
        &json!({"alg": "EdDSA", "typ": "at+jwt", "kid": ed.kid()}),
        &payload(),
    );
    assert!(ring.verify(&good, &validation()).is_ok());
    assert!(public.verify(&good, &validation()).is_ok());
    // And the ring still signs access tokens with the EdDSA key.
    let token = ring.sign(&claims()).expect("sign");
    assert_eq!(ring.verify(&token, &validation()), Ok(claims_of(&token)));
}

fn claims_of(token: &str) -> AccessTokenClaims {
    let payload = segments(token)[1].clone();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("claims")
}

#[test]
fn signers_one_per_algorithm() {
    let ed = key(Algorithm::EdDSA);
    let ed_next = key(Algorithm::EdDSA);
    let ec = key(Algorithm::ES256);
    let rsa = key(Algorithm::RS256);
    let rsa_old = key(Algorithm::RS256);
    let all = vec![
        ed.clone(),
        ed_next.clone(),
        ec.clone(),
        rsa.clone(),
        rsa_old.clone(),
    ];

    let ring = KeyRing::with_signers(all.clone(), ed.kid(), &[rsa.kid(), ed.kid()]).expect("ring");
    assert_eq!(ring.signing_key().kid(), ed.kid());
    let kid_for = |alg| ring.signing_key_for(alg).map(SigningKey::kid);
    assert_eq!(kid_for(Algorithm::EdDSA), Some(ed.kid()));
    assert_eq!(kid_for(Algorithm::RS256), Some(rsa.kid()));
    assert_eq!(kid_for(Algorithm::ES256), None);
    assert_eq!(
        ring.signing_algorithms(),
        [Algorithm::EdDSA, Algorithm::RS256]
    );
    // Every key is published, whatever its algorithm and whether it signs.
    let published: Vec<String> = ring.jwks().keys.into_iter().map(|k| k.kid).collect();
    let expected: Vec<String> = all.iter().map(|k| k.kid().to_owned()).collect();
    assert_eq!(published, expected);
    assert_eq!(
        PublicKeySet::from_jwks(&ring.jwks()).expect("reads").len(),
        5
    );

    // `new` has the access-token key as its only signer.
    let plain = KeyRing::new(all.clone(), ec.kid()).expect("ring");
    assert_eq!(
        plain.signing_key_for(Algorithm::ES256).map(SigningKey::kid),
        Some(ec.kid())
    );
    assert!(plain.signing_key_for(Algorithm::RS256).is_none());

    assert!(matches!(
        KeyRing::with_signers(all.clone(), ed.kid(), &[ed_next.kid()]),
        Err(TokenError::DuplicateSigner(Algorithm::EdDSA))
    ));
    assert!(matches!(
        KeyRing::with_signers(all.clone(), ed.kid(), &[rsa.kid(), rsa_old.kid()]),
        Err(TokenError::DuplicateSigner(Algorithm::RS256))
    ));
    let stranger = key(Algorithm::RS256);
    assert!(matches!(
        KeyRing::with_signers(all, ed.kid(), &[stranger.kid()]),
        Err(TokenError::SigningKeyNotInRing(_))
    ));
}

#[test]
fn alg_none_is_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        for none in ["none", "None", "NONE", "nOnE"] {
            let h = with(header(&key), "alg", json!(none));
            // Signed anyway: the header alg is not what decides.
            assert_eq!(
                check(&key, &h, &payload()),
                Err(VerifyError::WrongAlgorithm)
            );
            // The classic form: empty signature segment.
            let unsigned = format!("{}.{}.", b64(h.to_string()), b64(payload().to_string()));
            assert_eq!(
                ring_of(&key).verify(&unsigned, &validation()),
                Err(VerifyError::Malformed)
            );
            // And without the trailing dot.
            let two_segments = format!("{}.{}", b64(h.to_string()), b64(payload().to_string()));
            assert_eq!(
                ring_of(&key).verify(&two_segments, &validation()),
                Err(VerifyError::Malformed)
            );
        }
    }
}

#[test]
fn other_algorithms_in_header_are_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let other = match alg {
            Algorithm::EdDSA => "ES256",
            Algorithm::ES256 => "EdDSA",
            Algorithm::RS256 => unreachable!("not an access-token algorithm"),
        };
        for bad in [
            other, "RS256", "PS256", "HS256", "ES384", "eddsa", "es256", "Ed25519", "",
        ] {
            let h = with(header(&key), "alg", json!(bad));
            assert_eq!(
                check(&key, &h, &payload()),
                Err(VerifyError::WrongAlgorithm),
                "{bad}"
            );
        }
        assert_eq!(
            check(&key, &without(header(&key), "alg"), &payload()),
            Err(VerifyError::WrongAlgorithm)
        );
        assert_eq!(
            check(&key, &with(header(&key), "alg", Value::Null), &payload()),
            Err(VerifyError::WrongAlgorithm)
        );
    }
}

#[test]
fn hs256_with_public_key_as_secret_is_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let jwk = key.public_jwk();
        let mut raw_public = URL_SAFE_NO_PAD.decode(&jwk.x).expect("x");
        if let Some(y) = &jwk.y {
            raw_public.insert(0, 0x04);
            raw_public.extend(URL_SAFE_NO_PAD.decode(y).expect("y"));
        }
        let jwk_json = serde_json::to_string(&jwk).expect("jwk");
        for secret in [raw_public.as_slice(), jwk_json.as_bytes(), jwk.x.as_bytes()] {
            let h = with(header(&key), "alg", json!("HS256"));
            let input = format!("{}.{}", b64(h.to_string()), b64(payload().to_string()));
            let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), input.as_bytes());
            let token = format!("{input}.{}", b64(tag));
            assert_eq!(
                ring_of(&key).verify(&token, &validation()),
                Err(VerifyError::WrongAlgorithm)
            );
        }
    }
}

#[test]
fn key_carrying_and_critical_headers_are_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let attacker = self::key(alg);
        let attacker_jwk = serde_json::to_value(attacker.public_jwk()).expect("jwk");
        let cases = [
            ("jwk", attacker_jwk.clone()),
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("x5c", json!(["MIIBszCCAVmgAwIBAgIU"])),
            ("crit", json!(["exp"])),
            ("crit", json!([])),
            ("jwk", Value::Null),
        ];
        for (name, value) in cases {
            // Signed by the ring's own key: only the extra parameter is wrong.
            let h = with(header(&key), name, value.clone());
            assert_eq!(
                check(&key, &h, &payload()),
                Err(VerifyError::UnsupportedHeader(name)),
                "{name}: {value}"
            );
        }
        // The embedded-key attack proper: the attacker's own key, named and embedded.
        let h = with(header(&attacker), "jwk", attacker_jwk);
        let token = forge(&attacker, &h, &payload());
        assert_eq!(
            ring_of(&key).verify(&token, &validation()),
            Err(VerifyError::UnsupportedHeader("jwk"))
        );
        // Same with the ring's kid but the attacker's signature.
        let h = with(
            header(&key),
            "jwk",
            serde_json::to_value(attacker.public_jwk()).expect("jwk"),
        );
        let token = forge(&attacker, &h, &payload());
        assert_eq!(
            ring_of(&key).verify(&token, &validation()),
            Err(VerifyError::UnsupportedHeader("jwk"))
        );
    }
}

#[test]
fn hostile_kids_are_only_looked_up() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let real = key.kid().to_owned();
        let injections = [
            "../../../../etc/passwd".to_owned(),
            "/dev/null".to_owned(),
            "' OR '1'='1".to_owned(),
            "x'; DROP TABLE signing_keys; --".to_owned(),
            "kid\u{0}".to_owned(),
            format!("{real}\u{0}"),
            format!("{real} "),
            format!(" {real}"),
            real.to_uppercase(),
            real[..real.len() - 1].to_owned(),
            format!("{real}/../{real}"),
            "*".to_owned(),
            "%".to_owned(),
        ];
        for kid in injections {
            let h = with(header(&key), "kid", json!(kid));
            assert_eq!(
                check(&key, &h, &payload()),
                Err(VerifyError::UnknownKey),
                "{kid:?}"
            );
        }
        for bad in [json!(""), Value::Null, json!("a".repeat(MAX_KID_LEN + 1))] {
            let h = with(header(&key), "kid", bad);
            assert_eq!(check(&key, &h, &payload()), Err(VerifyError::InvalidKeyId));
        }
        let overlong = format!("{real}{}", "a".repeat(MAX_KID_LEN));
        let h = with(header(&key), "kid", json!(overlong));
        assert_eq!(check(&key, &h, &payload()), Err(VerifyError::InvalidKeyId));
        assert_eq!(
            check(&key, &without(header(&key), "kid"), &payload()),
            Err(VerifyError::InvalidKeyId)
        );
        for bad in [json!(1), json!([real]), json!({"kid": real})] {
            let h = with(header(&key), "kid", bad);
            assert_eq!(check(&key, &h, &payload()), Err(VerifyError::Malformed));
        }
    }
}

#[test]
fn longest_kid_is_accepted() {
    let source = key(Algorithm::EdDSA);
    let key = SigningKey::from_stored(
        "k".repeat(MAX_KID_LEN),
        Algorithm::EdDSA,
        source.private_pkcs8_der(),
        source.created_at(),
    )
    .expect("load");
    let ring = ring_of(&key);
    let token = ring.sign(&claims()).expect("sign");
    assert!(ring.verify(&token, &validation()).is_ok());
}

#[test]
fn tampered_payload_is_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let token = ring.sign(&claims()).expect("sign");
        let parts = segments(&token);
        let evil = b64(with(payload(), "sub", json!("admin")).to_string());
        let tampered = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(
            ring.verify(&tampered, &validation()),
            Err(VerifyError::BadSignature)
        );
        // A header rewritten to something equivalent is tampering too.
        let respaced = b64(format!(
            r#"{{ "alg":"{alg}", "typ":"at+jwt", "kid":"{}" }}"#,
            key.kid()
        ));
        let tampered = format!("{respaced}.{}.{}", parts[1], parts[2]);
        assert_eq!(
            ring.verify(&tampered, &validation()),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn wrong_signatures_are_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let token = ring.sign(&claims()).expect("sign");
        let parts = segments(&token);
        let signature = URL_SAFE_NO_PAD.decode(&parts[2]).expect("base64");
        let rebuild = |sig: &[u8]| format!("{}.{}.{}", parts[0], parts[1], b64(sig));

        for i in [0, 31, 32, 63] {
            let mut flipped = signature.clone();
            flipped[i] ^= 0x01;
            assert_eq!(
                ring.verify(&rebuild(&flipped), &validation()),
                Err(VerifyError::BadSignature)
            );
        }
        assert_eq!(
            ring.verify(&rebuild(&signature[..63]), &validation()),
            Err(VerifyError::BadSignature)
        );
        let mut longer = signature.clone();
        longer.push(0);
        assert_eq!(
            ring.verify(&rebuild(&longer), &validation()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            ring.verify(&rebuild(&[0; 64]), &validation()),
            Err(VerifyError::BadSignature)
        );

        // Signed by a different key that claims the same kid.
        let impostor = SigningKey::from_stored(
            key.kid().to_owned(),
            alg,
            self::key(alg).private_pkcs8_der(),
            key.created_at(),
        )
        .expect("load");
        let token = ring_of(&impostor).sign(&claims()).expect("sign");
        assert_eq!(
            ring.verify(&token, &validation()),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn es256_der_signature_is_refused() {
    let key = key(Algorithm::ES256);
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, key.private_pkcs8_der())
        .expect("parse");
    let input = format!("{}.{}", key.header_b64(), b64(payload().to_string()));
    let der = pair
        .sign(&aws_lc_rs::rand::SystemRandom::new(), input.as_bytes())
        .expect("sign");
    let token = format!("{input}.{}", b64(der));
    assert_eq!(
        ring_of(&key).verify(&token, &validation()),
        Err(VerifyError::BadSignature)
    );
}

#[test]
fn expiry_and_leeway() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let at = |exp: i64, leeway: u64| {
            let token = forge(&key, &header(&key), &with(payload(), "exp", json!(exp)));
            let v = Validation {
                leeway_secs: leeway,
                ..validation()
            };
            ring_of(&key).verify(&token, &v)
        };
        assert_eq!(at(NOW - 1, 0), Err(VerifyError::Expired));
        assert_eq!(at(NOW, 0), Err(VerifyError::Expired));
        assert!(at(NOW + 1, 0).is_ok());
        assert!(at(NOW - 4, 5).is_ok());
        assert_eq!(at(NOW - 5, 5), Err(VerifyError::Expired));
        assert_eq!(at(NOW - 3600, 1), Err(VerifyError::Expired));
        assert_eq!(at(i64::MIN, 1), Err(VerifyError::Expired));
        // A leeway too large for i64 saturates instead of overflowing.
        assert!(at(NOW - 3600, u64::MAX).is_ok());
    }
}

#[test]
fn not_yet_valid_and_leeway() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let at = |nbf: i64, iat: i64, leeway: u64| {
            let p = with(with(payload(), "nbf", json!(nbf)), "iat", json!(iat));
            let v = Validation {
                leeway_secs: leeway,
                ..validation()
            };
            ring_of(&key).verify(&forge(&key, &header(&key), &p), &v)
        };
        assert_eq!(at(NOW + 60, NOW, 1), Err(VerifyError::NotYetValid));
        assert_eq!(at(NOW, NOW + 60, 1), Err(VerifyError::NotYetValid));
        assert_eq!(at(NOW + 2, NOW, 1), Err(VerifyError::NotYetValid));
        assert_eq!(at(NOW, NOW + 2, 1), Err(VerifyError::NotYetValid));
        assert_eq!(at(NOW + 1, NOW, 0), Err(VerifyError::NotYetValid));
        assert!(at(NOW + 1, NOW + 1, 1).is_ok());
        assert!(at(NOW + 30, NOW + 30, 30).is_ok());
        assert!(at(NOW - 60, NOW - 60, 0).is_ok());
        // nbf is optional and then defaults to iat, which is still checked.
        let p = with(without(payload(), "nbf"), "iat", json!(NOW + 60));
        assert_eq!(
            check(&key, &header(&key), &p),
            Err(VerifyError::NotYetValid)
        );
        let claims = check(&key, &header(&key), &without(payload(), "nbf")).expect("valid");
        assert_eq!(claims.nbf, claims.iat);
    }
}

#[test]
fn wrong_issuer_is_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let evil = [
            "https://evil.example",
            "https://auth.example.test/",
            "HTTPS://AUTH.EXAMPLE.TEST",
            "https://auth.example.test.evil.example",
            "",
        ];
        for iss in evil {
            let p = with(payload(), "iss", json!(iss));
            assert_eq!(
                check(&key, &header(&key), &p),
                Err(VerifyError::WrongIssuer),
                "{iss}"
            );
        }
    }
}

#[test]
fn audience_rules() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let any = Validation {
            audience: None,
            ..validation()
        };
        let token = |aud: Value| forge(&key, &header(&key), &with(payload(), "aud", aud));

        assert_eq!(
            ring.verify(&token(json!("other")), &validation()),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            ring.verify(&token(json!("API")), &validation()),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            ring.verify(&token(json!(["other", "more"])), &validation()),
            Err(VerifyError::WrongAudience)
        );
        assert_eq!(
            ring.verify(&token(json!([])), &validation()),
            Err(VerifyError::WrongAudience)
        );
        let claims = ring
            .verify(&token(json!(["other", "api"])), &validation())
            .expect("array containing the audience");
        assert_eq!(claims.aud, "api");

        assert_eq!(
            ring.verify(&token(json!("other")), &any).map(|c| c.aud),
            Ok("other".into())
        );
        assert_eq!(
            ring.verify(&token(json!(["x", "y"])), &any).map(|c| c.aud),
            Ok("x".into())
        );
        assert_eq!(
            ring.verify(&token(json!([])), &any),
            Err(VerifyError::MissingClaim("aud"))
        );
        assert_eq!(
            ring.verify(&token(json!(7)), &any),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            ring.verify(&token(json!([7])), &any),
            Err(VerifyError::Malformed)
        );
    }
}

#[test]
fn typ_must_be_at_jwt() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        for bad in [
            "JWT",
            "jwt",
            "at+jwt ",
            "at-jwt",
            "dpop+jwt",
            "application/jwt",
            "logout+jwt",
            "",
        ] {
            let h = with(header(&key), "typ", json!(bad));
            assert_eq!(
                check(&key, &h, &payload()),
                Err(VerifyError::WrongType),
                "{bad}"
            );
        }
        for bad in [
            without(header(&key), "typ"),
            with(header(&key), "typ", Value::Null),
        ] {
            assert_eq!(check(&key, &bad, &payload()), Err(VerifyError::WrongType));
        }
        let h = with(header(&key), "typ", json!(1));
        assert_eq!(check(&key, &h, &payload()), Err(VerifyError::Malformed));
        for good in [
            "at+jwt",
            "AT+JWT",
            "application/at+jwt",
            "Application/At+JWT",
        ] {
            let h = with(header(&key), "typ", json!(good));
            assert!(check(&key, &h, &payload()).is_ok(), "{good}");
        }
    }
}

#[test]
fn every_required_claim_is_required() {
    let required = [
        "iss",
        "sub",
        "aud",
        "exp",
        "iat",
        "jti",
        "client_id",
        "scope",
        "sid",
    ];
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        for name in required {
            assert_eq!(
                check(&key, &header(&key), &without(payload(), name)),
                Err(VerifyError::MissingClaim(name)),
                "{name} absent"
            );
            assert_eq!(
                check(&key, &header(&key), &with(payload(), name, Value::Null)),
                Err(VerifyError::MissingClaim(name)),
                "{name} null"
            );
        }
        for name in ["sub", "jti", "client_id", "sid"] {
            assert_eq!(
                check(&key, &header(&key), &with(payload(), name, json!(""))),
                Err(VerifyError::MissingClaim(name)),
                "{name} empty"
            );
        }
        // An empty scope is a real value (a client with no scopes).
        let claims = check(&key, &header(&key), &with(payload(), "scope", json!(""))).expect("ok");
        assert_eq!(claims.scope, "");
    }
}

#[test]
fn roles_are_carried_and_optional_on_verification() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let token = ring.sign(&claims()).expect("sign");
        let raw = segments(&token)[1].clone();
        let payload_json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).expect("b64")).expect("json");
        assert_eq!(
            payload_json["roles"],
            json!(["admin"]),
            "issued as an array"
        );
        let verified = ring.verify(&token, &validation()).expect("valid");
        assert_eq!(verified.roles, vec!["admin".to_string()]);
        // Minted before roles existed: no claim, no roles.
        let old = check(&key, &header(&key), &without(payload(), "roles")).expect("ok");
        assert!(old.roles.is_empty());
        let null = check(&key, &header(&key), &with(payload(), "roles", Value::Null)).expect("ok");
        assert!(null.roles.is_empty());
        let mut none = claims();
        none.roles.clear();
        let token = ring.sign(&none).expect("sign");
        let raw = segments(&token)[1].clone();
        let payload_json: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(raw).expect("b64")).expect("json");
        assert_eq!(payload_json["roles"], json!([]), "empty array when none");
    }
}

#[test]
fn claims_of_the_wrong_type_are_malformed() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let cases = [
            ("exp", json!("1700000900")),
            ("exp", json!(1_700_000_900.5)),
            ("iat", json!(true)),
            ("sub", json!(42)),
            ("scope", json!(["read"])),
            ("sid", json!({"id": 1})),
            ("roles", json!("admin")),
            ("roles", json!([1])),
        ];
        for (name, value) in cases {
            let p = with(payload(), name, value);
            assert_eq!(
                check(&key, &header(&key), &p),
                Err(VerifyError::Malformed),
                "{name}"
            );
        }
    }
}

#[test]
fn duplicate_header_parameters_are_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let kid = key.kid();
        let headers = [
            format!(r#"{{"alg":"none","alg":"{alg}","typ":"at+jwt","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"other","kid":"{kid}"}}"#),
            format!(r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{kid}","jwk":1,"jwk":2}}"#),
        ];
        for h in headers {
            let token = forge_raw(&key, &h, &payload().to_string());
            assert_eq!(
                ring_of(&key).verify(&token, &validation()),
                Err(VerifyError::Malformed),
                "{h}"
            );
        }
    }
}

#[test]
fn overlong_tokens_are_refused_before_parsing() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let token_with_pad = |n: usize| {
            forge(
                &key,
                &header(&key),
                &with(payload(), "pad", json!("a".repeat(n))),
            )
        };
        // Find the largest padded token that still fits.
        let mut n = 5000;
        while token_with_pad(n + 1).len() <= MAX_TOKEN_LEN {
            n += 1;
        }
        let fits = token_with_pad(n);
        assert!(fits.len() <= MAX_TOKEN_LEN && fits.len() >= MAX_TOKEN_LEN - 2);
        assert!(ring.verify(&fits, &validation()).is_ok());
        let too_long = token_with_pad(n + 1);
        assert!(too_long.len() > MAX_TOKEN_LEN);
        assert_eq!(
            ring.verify(&too_long, &validation()),
            Err(VerifyError::TooLong)
        );

        for junk in [
            "a".repeat(MAX_TOKEN_LEN + 1),
            ".".repeat(100_000),
            "é".repeat(5000),
        ] {
            assert_eq!(ring.verify(&junk, &validation()), Err(VerifyError::TooLong));
        }

        // The signer refuses to mint what the verifier would refuse.
        let mut big = claims();
        big.scope = "s ".repeat(MAX_TOKEN_LEN / 2);
        assert!(matches!(ring.sign(&big), Err(TokenError::TokenTooLong(_))));
    }
}

#[test]
fn garbage_is_malformed() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let good = ring.sign(&claims()).expect("sign");
        let parts = segments(&good);
        let (h, p, s) = (&parts[0], &parts[1], &parts[2]);
        let garbage = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "not a token".into(),
            "Bearer x.y.z".into(),
            "a.b".into(),
            "a.b.c".into(),
            "a.b.c.d".into(),
            "eyJ.eyJ.sig".into(),
            format!("{h}.{p}"),
            format!("{h}.{p}.{s}.{s}"),
            format!("{h}.{p}.{s}."),
            format!(".{h}.{p}.{s}"),
            format!("{h}..{s}"),
            format!(".{p}.{s}"),
            format!("{h}.{p}.{s}="),
            format!("{h}=.{p}.{s}"),
            format!("{h}.{p}.{s} "),
            format!(" {h}.{p}.{s}"),
            format!("{h}.{p}.{}", s.replace('-', "+").replace('_', "/") + "+"),
            format!("{h}.{p}.{s}\n"),
            format!("{h}.{p}.!{s}"),
            // JWE compact form: five segments.
            format!("{h}.{p}.{s}.{s}.{s}"),
            // Header segment that decodes to something other than a JSON object.
            format!("{}.{p}.{s}", b64("not json")),
            format!("{}.{p}.{s}", b64("[]")),
            format!("{}.{p}.{s}", b64("\"EdDSA\"")),
            format!("{}.{p}.{s}", b64("null")),
            format!("{}.{p}.{s}", b64([0xff, 0xfe, 0x00])),
        ];
        for token in garbage {
            assert_eq!(
                ring.verify(&token, &validation()),
                Err(VerifyError::Malformed),
                "{token:?}"
            );
        }
        // A JSON array header with the right values in field order must not pass either.
        let array_header = json!([alg.as_str(), "at+jwt", key.kid()]);
        let token = forge(&key, &array_header, &payload());
        assert_eq!(
            ring.verify(&token, &validation()),
            Err(VerifyError::Malformed)
        );
        // Payloads that are signed but are not a JSON object of claims.
        for body in ["[]", "null", "\"claims\"", "{\"iss\":", "", "{} trailing"] {
            let token = forge_raw(&key, &header(&key).to_string(), body);
            assert_eq!(
                ring.verify(&token, &validation()),
                Err(VerifyError::Malformed),
                "{body}"
            );
        }
        // Claims as an array in the order of the fields of the claims struct.
        let c = claims();
        let positional = vec![
            json!(c.iss),
            json!(c.sub),
            json!(c.aud),
            json!(c.exp),
            json!(c.iat),
            json!(c.nbf),
            json!(c.jti),
            json!(c.client_id),
            json!(c.scope),
            json!(c.sid),
        ];
        let token = forge(&key, &header(&key), &Value::Array(positional));
        assert_eq!(
            ring.verify(&token, &validation()),
            Err(VerifyError::Malformed)
        );
    }
}

#[test]
fn non_canonical_base64_trailing_bits_are_refused() {
    for alg in Algorithm::ACCESS_TOKEN {
        let key = key(alg);
        let ring = ring_of(&key);
        let token = ring.sign(&claims()).expect("sign");
        let parts = segments(&token);
        // 64 bytes encode to 86 characters whose last one carries 4 unused bits; setting one
        // of them decodes to the same bytes in a lenient decoder.
        let sig = &parts[2];
        let last = sig.chars().last().expect("char");
        const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let idx = ALPHABET.find(last).expect("alphabet");
        let sneaky = ALPHABET.chars().nth(idx | 1).expect("char");
        assert_ne!(
            sneaky, last,
            "generated signatures end with zero trailing bits"
        );
        let mangled = format!(
            "{}.{}.{}{sneaky}",
            parts[0],
            parts[1],
            &sig[..sig.len() - 1]
        );
        assert_eq!(
            ring.verify(&mangled, &validation()),
            Err(VerifyError::Malformed)
        );
    }
}

#[test]
fn new_jti_is_unique() {
    let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_jti()).collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.iter().all(|id| id.len() >= 22));
}

#[test]
fn verify_errors_never_contain_the_token() {
    let key = key(Algorithm::EdDSA);
    let token = ring_of(&key).sign(&claims()).expect("sign");
    let parts = segments(&token);
    let tampered = format!("{}.{}.{}", parts[0], b64("{\"sub\":\"secret\"}"), parts[2]);
    let err = ring_of(&key)
        .verify(&tampered, &validation())
        .expect_err("refused");
    let shown = format!("{err} {err:?}");
    for part in segments(&tampered) {
        assert!(!shown.contains(&part));
    }
}

/// Resource servers verify with [`PublicKeySet`] read from the JWKS *text*; every token and
/// forgery the ring refuses, the public set refuses for the same reason.
#[test]
fn public_key_set_from_jwks_text_matches_the_ring() {
    let ed = key(Algorithm::EdDSA);
    let ec = key(Algorithm::ES256);
    let ring = KeyRing::new(vec![ed.clone(), ec.clone()], ed.kid()).expect("ring");
    let text = serde_json::to_string(&ring.jwks()).expect("jwks");
    let jwks: JwkSet = serde_json::from_str(&text).expect("parse");
    let public = PublicKeySet::from_jwks(&jwks).expect("public set");
    assert_eq!(public.len(), 2);
    assert!(!public.is_empty());
    assert_eq!(
        public.get(ec.kid()).map(VerifyingKey::algorithm),
        Some(Algorithm::ES256)
    );
    assert!(public.get("nope").is_none());
    assert_eq!(ring.public_keys().keys().len(), 2);

    let signed_by_ec = KeyRing::new(vec![ec.clone()], ec.kid()).expect("ring");
    let mut tokens = vec![
        ring.sign(&claims()).expect("sign"),
        signed_by_ec.sign(&claims()).expect("sign"),
    ];
    // A few refusals of different kinds.
    tokens.push(forge(
        &ed,
        &with(header(&ed), "alg", json!("none")),
        &payload(),
    ));
    tokens.push(forge(
        &ed,
        &with(header(&ed), "jku", json!("https://evil")),
        &payload(),
    ));
    tokens.push(forge(
        &ed,
        &with(header(&ed), "kid", json!("unknown")),
        &payload(),
    ));
    tokens.push(forge(
        &ed,
        &header(&ed),
        &with(payload(), "exp", json!(NOW - 60)),
    ));
    tokens.push(forge(&key(Algorithm::EdDSA), &header(&ed), &payload()));
    tokens.push("a".repeat(MAX_TOKEN_LEN + 1));
    for token in &tokens {
        assert_eq!(
            public.verify(token, &validation()),
            ring.verify(token, &validation())
        );
    }
    assert!(public.verify(&tokens[0], &validation()).is_ok());
    assert!(public.verify(&tokens[1], &validation()).is_ok());
    assert_eq!(
        public.verify(&tokens[4], &validation()),
        Err(VerifyError::UnknownKey)
    );
    assert_eq!(
        PublicKeySet::default().verify(&tokens[0], &validation()),
        Err(VerifyError::UnknownKey)
    );
}

#[test]
fn public_key_set_refuses_duplicate_kids_and_bad_keys() {
    let a = key(Algorithm::EdDSA);
    let twin = SigningKey::from_stored(
        a.kid().to_owned(),
        Algorithm::EdDSA,
        key(Algorithm::EdDSA).private_pkcs8_der(),
        a.created_at(),
    )
    .expect("load");
    let jwks = JwkSet {
        keys: vec![a.public_jwk(), twin.public_jwk()],
    };
    assert!(matches!(
        PublicKeySet::from_jwks(&jwks),
        Err(TokenError::DuplicateKeyId(_))
    ));
    assert!(matches!(
        PublicKeySet::new(vec![a.verifying_key(), twin.verifying_key()]),
        Err(TokenError::DuplicateKeyId(_))
    ));
    let mut bad = a.public_jwk();
    bad.alg = "HS256".into();
    let jwks = JwkSet {
        keys: vec![key(Algorithm::ES256).public_jwk(), bad],
    };
    assert!(matches!(
        PublicKeySet::from_jwks(&jwks),
        Err(TokenError::InvalidJwk { .. })
    ));
    assert!(
        PublicKeySet::from_jwks(&JwkSet::default())
            .expect("empty")
            .is_empty()
    );
}
