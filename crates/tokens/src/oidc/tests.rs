//! ID and logout tokens: known answers for `at_hash`, the exact token shapes, round trips with
//! every algorithm, and one forged token per refusal rule (signed with the ring's own key, so
//! the rule under test is the only thing wrong with it).

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::*;
use crate::{AccessTokenClaims, SigningKey, new_jti};

const ISSUER: &str = "https://auth.example.test";
const CLIENT: &str = "spa";
const NOW: i64 = 1_700_000_000;

fn key(alg: Algorithm) -> SigningKey {
    let created = OffsetDateTime::from_unix_timestamp(NOW).expect("timestamp");
    SigningKey::generate(alg, created).expect("generate key")
}

/// Access tokens with EdDSA; ID and logout tokens with any of the three algorithms.
struct Fixture {
    ring: KeyRing,
    ed: SigningKey,
    ec: SigningKey,
    rsa: SigningKey,
}

impl Fixture {
    fn new() -> Fixture {
        let (ed, ec, rsa) = (
            key(Algorithm::EdDSA),
            key(Algorithm::ES256),
            key(Algorithm::RS256),
        );
        let ring = KeyRing::with_signers(
            vec![ed.clone(), ec.clone(), rsa.clone()],
            ed.kid(),
            &[ec.kid(), rsa.kid()],
        )
        .expect("ring");
        Fixture { ring, ed, ec, rsa }
    }

    fn key(&self, alg: Algorithm) -> &SigningKey {
        match alg {
            Algorithm::EdDSA => &self.ed,
            Algorithm::ES256 => &self.ec,
            Algorithm::RS256 => &self.rsa,
        }
    }

    /// The ring's JWKS, read back as a resource server or relying party would.
    fn public(&self) -> PublicKeySet {
        let text = serde_json::to_string(&self.ring.jwks()).expect("jwks json");
        PublicKeySet::from_jwks(&serde_json::from_str(&text).expect("jwks parses"))
            .expect("every key usable")
    }

    /// Verifies with the ring and with the published JWKS, which must agree.
    fn verify_id(
        &self,
        token: &str,
        validation: &IdTokenValidation,
    ) -> Result<IdTokenClaims, VerifyError> {
        let result = self.ring.verify_id_token(token, validation);
        assert_eq!(
            self.public().verify_id_token(token, validation),
            result,
            "PublicKeySet disagrees"
        );
        result
    }

    fn verify_logout(
        &self,
        token: &str,
        validation: &Validation,
    ) -> Result<LogoutTokenClaims, VerifyError> {
        let result = self.ring.verify_logout_token(token, validation);
        assert_eq!(
            self.public().verify_logout_token(token, validation),
            result,
            "PublicKeySet disagrees"
        );
        result
    }
}

fn id_claims() -> IdTokenClaims {
    IdTokenClaims {
        iss: ISSUER.into(),
        sub: "user-1".into(),
        aud: CLIENT.into(),
        exp: NOW + 900,
        iat: NOW,
        auth_time: NOW - 60,
        nonce: Some("n-0S6_WzA2Mj".into()),
        sid: "cookie-session-1".into(),
        at_hash: None,
        azp: None,
    }
}

fn id_validation() -> IdTokenValidation {
    IdTokenValidation {
        leeway_secs: 1,
        ..IdTokenValidation::new(ISSUER, CLIENT, NOW)
    }
}

fn logout_claims() -> LogoutTokenClaims {
    LogoutTokenClaims {
        iss: ISSUER.into(),
        sub: "user-1".into(),
        aud: CLIENT.into(),
        iat: NOW,
        exp: NOW + 120,
        jti: new_jti(),
        sid: "cookie-session-1".into(),
    }
}

fn logout_validation() -> Validation {
    Validation {
        issuer: ISSUER.into(),
        audience: Some(CLIENT.into()),
        leeway_secs: 1,
        now: NOW,
    }
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_json(segment: &str) -> Value {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("b64")).expect("json")
}

fn header_of(token: &str) -> Value {
    decode_json(token.split('.').next().expect("header"))
}

fn payload_of(token: &str) -> Value {
    decode_json(token.split('.').nth(1).expect("payload"))
}

/// A token with exactly this header and payload, validly signed by `key`.
fn forge(key: &SigningKey, header: &Value, payload: &Value) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = key.sign_raw(input.as_bytes()).expect("sign");
    format!("{input}.{}", b64(signature))
}

fn header(key: &SigningKey, typ: &str) -> Value {
    json!({"alg": key.algorithm().as_str(), "typ": typ, "kid": key.kid()})
}

fn with(mut value: Value, name: &str, new: Value) -> Value {
    value[name] = new;
    value
}

fn without(mut value: Value, name: &str) -> Value {
    value.as_object_mut().expect("object").remove(name);
    value
}

fn names(value: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

// ---------------------------------------------------------------------------------------------
// at_hash

#[test]
fn at_hash_matches_the_oidc_core_example() {
    // OpenID Connect Core 1.0, Appendix A.3 (an RS256 ID token): this access token has
    // at_hash "77QmUPtjPfzWtF2AnpK9RQ".
    let access_token = "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y";
    assert_eq!(
        at_hash(access_token, Algorithm::RS256),
        "77QmUPtjPfzWtF2AnpK9RQ"
    );
    // ES256 hashes with SHA-256 as well.
    assert_eq!(
        at_hash(access_token, Algorithm::ES256),
        "77QmUPtjPfzWtF2AnpK9RQ"
    );
}

#[test]
fn at_hash_is_the_left_half_of_sha256_or_sha512() {
    // FIPS 180-2 known answers for "abc".
    let sha256_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    let sha512_abc = "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
                      2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f";
    let hex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    assert_eq!(
        at_hash("abc", Algorithm::RS256),
        b64(&hex(sha256_abc)[..16])
    );
    // EdDSA (Ed25519): SHA-512, left 32 bytes.
    let eddsa = at_hash("abc", Algorithm::EdDSA);
    assert_eq!(eddsa, b64(&hex(sha512_abc)[..32]));
    assert_eq!(eddsa.len(), 43);
    assert_eq!(at_hash("abc", Algorithm::RS256).len(), 22);
}

// ---------------------------------------------------------------------------------------------
// ID tokens

#[test]
fn id_tokens_roundtrip_with_every_algorithm() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let mut claims = id_claims();
        claims.at_hash = Some(at_hash("the-access-token", alg));
        claims.azp = Some(CLIENT.into());
        let token = fx.ring.sign_id_token(&claims, alg).expect("sign");

        // Header exactly {"alg","typ":"JWT","kid"} naming that algorithm's current key.
        let key = fx.key(alg);
        assert_eq!(
            token.split('.').next(),
            Some(
                b64(format!(
                    r#"{{"alg":"{}","typ":"JWT","kid":"{}"}}"#,
                    alg.as_str(),
                    key.kid()
                ))
                .as_str()
            )
        );
        let validation = IdTokenValidation {
            nonce: Some("n-0S6_WzA2Mj".into()),
            access_token: Some("the-access-token".into()),
            ..id_validation()
        };
        assert_eq!(fx.verify_id(&token, &validation), Ok(claims.clone()));

        // An ID token is never an access token, whatever key signed it.
        let access = Validation::new(ISSUER, NOW);
        assert_eq!(fx.ring.verify(&token, &access), Err(VerifyError::WrongType));
        assert_eq!(
            fx.public().verify(&token, &access),
            Err(VerifyError::WrongType)
        );
        // Nor a logout token.
        assert_eq!(
            fx.verify_logout(&token, &logout_validation()),
            Err(VerifyError::WrongType)
        );
    }
}

#[test]
fn id_token_optional_claims_are_left_out() {
    let fx = Fixture::new();
    let claims = IdTokenClaims {
        nonce: None,
        ..id_claims()
    };
    let token = fx
        .ring
        .sign_id_token(&claims, Algorithm::RS256)
        .expect("sign");
    let payload = payload_of(&token);
    assert_eq!(
        names(&payload),
        ["aud", "auth_time", "exp", "iat", "iss", "sid", "sub"]
    );
    assert_eq!(payload["aud"], CLIENT);
    assert_eq!(header_of(&token)["typ"], "JWT");
    assert_eq!(fx.verify_id(&token, &id_validation()), Ok(claims));
}

#[test]
fn id_token_needs_a_signer_of_its_algorithm() {
    let ed = key(Algorithm::EdDSA);
    let ring = KeyRing::new(vec![ed.clone(), key(Algorithm::RS256)], ed.kid()).expect("ring");
    // The RS256 key is in the ring (published) but was not chosen to sign.
    assert!(matches!(
        ring.sign_id_token(&id_claims(), Algorithm::RS256),
        Err(TokenError::NoSigningKey(Algorithm::RS256))
    ));
    assert!(matches!(
        ring.sign_logout_token(&logout_claims(), Algorithm::ES256),
        Err(TokenError::NoSigningKey(Algorithm::ES256))
    ));
    // The access-token key signs ID tokens of its own algorithm.
    let token = ring
        .sign_id_token(&id_claims(), Algorithm::EdDSA)
        .expect("sign");
    assert_eq!(header_of(&token)["kid"], ed.kid());
}

#[test]
fn id_token_forged_baseline_is_valid() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let key = fx.key(alg);
        let token = forge(key, &header(key, "JWT"), &json!(id_claims()));
        assert_eq!(fx.verify_id(&token, &id_validation()), Ok(id_claims()));
    }
}

#[test]
fn id_token_header_rules() {
    let fx = Fixture::new();
    let payload = json!(id_claims());
    for alg in Algorithm::ALL {
        let key = fx.key(alg);
        for bad in ["at+jwt", "logout+jwt", "JOSE", "jwt+at", ""] {
            let token = forge(key, &header(key, bad), &payload);
            assert_eq!(
                fx.verify_id(&token, &id_validation()),
                Err(VerifyError::WrongType),
                "{bad}"
            );
        }
        let token = forge(key, &without(header(key, "JWT"), "typ"), &payload);
        assert_eq!(
            fx.verify_id(&token, &id_validation()),
            Err(VerifyError::WrongType)
        );
        for good in ["jwt", "application/jwt"] {
            let token = forge(key, &header(key, good), &payload);
            assert!(fx.verify_id(&token, &id_validation()).is_ok(), "{good}");
        }
        // The key named by kid fixes the algorithm.
        for bad in ["none", "HS256", "RS384", "PS256", "ES384", "eddsa"]
            .into_iter()
            .chain(
                Algorithm::ALL
                    .into_iter()
                    .filter(|a| *a != alg)
                    .map(Algorithm::as_str),
            )
        {
            let token = forge(key, &with(header(key, "JWT"), "alg", json!(bad)), &payload);
            assert_eq!(
                fx.verify_id(&token, &id_validation()),
                Err(VerifyError::WrongAlgorithm),
                "{alg} key, alg {bad}"
            );
        }
        for (name, value) in [
            ("jwk", json!({})),
            ("jku", json!("https://x")),
            ("crit", json!(["b64"])),
        ] {
            let token = forge(key, &with(header(key, "JWT"), name, value), &payload);
            assert!(matches!(
                fx.verify_id(&token, &id_validation()),
                Err(VerifyError::UnsupportedHeader(_))
            ));
        }
    }
    // A kid from nowhere.
    let stranger = key(Algorithm::RS256);
    let token = forge(&stranger, &header(&stranger, "JWT"), &payload);
    assert_eq!(
        fx.verify_id(&token, &id_validation()),
        Err(VerifyError::UnknownKey)
    );
}

#[test]
fn id_token_tampering_is_refused() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let token = fx.ring.sign_id_token(&id_claims(), alg).expect("sign");
        let parts: Vec<&str> = token.split('.').collect();
        let evil = b64(json!(IdTokenClaims {
            sub: "admin".into(),
            ..id_claims()
        })
        .to_string());
        let swapped = format!("{}.{evil}.{}", parts[0], parts[2]);
        assert_eq!(
            fx.verify_id(&swapped, &id_validation()),
            Err(VerifyError::BadSignature)
        );
        // Same kid, another key of the same algorithm.
        let impostor = SigningKey::from_stored(
            fx.key(alg).kid().to_owned(),
            alg,
            key(alg).private_pkcs8_der(),
            fx.key(alg).created_at(),
        )
        .expect("impostor");
        let forged = forge(&impostor, &header(&impostor, "JWT"), &json!(id_claims()));
        assert_eq!(
            fx.verify_id(&forged, &id_validation()),
            Err(VerifyError::BadSignature)
        );
        // A flipped signature bit.
        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).expect("b64");
        signature[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(signature));
        assert_eq!(
            fx.verify_id(&flipped, &id_validation()),
            Err(VerifyError::BadSignature)
        );
    }
}

#[test]
fn id_token_claim_rules() {
    let fx = Fixture::new();
    let key = &fx.rsa;
    let h = header(key, "JWT");
    let base = json!(id_claims());
    let check = |payload: &Value, validation: &IdTokenValidation| {
        fx.verify_id(&forge(key, &h, payload), validation)
    };
    let v = id_validation();

    assert_eq!(
        check(&with(base.clone(), "iss", json!("https://evil.test")), &v),
        Err(VerifyError::WrongIssuer)
    );
    assert_eq!(
        check(&with(base.clone(), "aud", json!("other-client")), &v),
        Err(VerifyError::WrongAudience)
    );
    // Several audiences: azp required, and it must be this client.
    let many = with(base.clone(), "aud", json!(["other", CLIENT]));
    assert_eq!(check(&many, &v), Err(VerifyError::MissingClaim("azp")));
    let got = check(&with(many.clone(), "azp", json!(CLIENT)), &v).expect("valid");
    assert_eq!(got.aud, CLIENT);
    assert_eq!(
        check(&with(many, "azp", json!("other")), &v),
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        check(&with(base.clone(), "azp", json!("other")), &v),
        Err(VerifyError::WrongAudience)
    );
    // No client required (an id_token_hint): the token's own audience comes back.
    let any_client = IdTokenValidation {
        client_id: None,
        ..id_validation()
    };
    let got = check(
        &with(base.clone(), "aud", json!("other-client")),
        &any_client,
    )
    .expect("any audience");
    assert_eq!(got.aud, "other-client");
    assert_eq!(
        check(&without(base.clone(), "aud"), &any_client),
        Err(VerifyError::MissingClaim("aud"))
    );

    // Lifetime, with the leeway; an expired hint is fine when asked for.
    let expired = with(base.clone(), "exp", json!(NOW - 1));
    assert_eq!(check(&expired, &v), Err(VerifyError::Expired));
    let hint = IdTokenValidation {
        allow_expired: true,
        ..id_validation()
    };
    assert!(check(&expired, &hint).is_ok());
    assert!(check(&with(base.clone(), "exp", json!(NOW)), &v).is_ok());
    let future = with(base.clone(), "iat", json!(NOW + 2));
    assert_eq!(check(&future, &v), Err(VerifyError::NotYetValid));
    assert_eq!(check(&future, &hint), Err(VerifyError::NotYetValid));
    assert_eq!(
        check(&with(base.clone(), "nbf", json!(NOW + 2)), &v),
        Err(VerifyError::NotYetValid)
    );

    // nonce: checked only when the validation names one.
    let wants_nonce = |nonce: &str| IdTokenValidation {
        nonce: Some(nonce.into()),
        ..id_validation()
    };
    assert!(check(&base, &wants_nonce("n-0S6_WzA2Mj")).is_ok());
    assert_eq!(
        check(&base, &wants_nonce("n-0S6_WzA2Mk")),
        Err(VerifyError::WrongNonce)
    );
    assert_eq!(
        check(
            &without(base.clone(), "nonce"),
            &wants_nonce("n-0S6_WzA2Mj")
        ),
        Err(VerifyError::WrongNonce)
    );
    assert!(check(&without(base.clone(), "nonce"), &v).is_ok());

    // at_hash: checked (with the signing key's hash) only when an access token is given.
    let wants_at = IdTokenValidation {
        access_token: Some("at-1".into()),
        ..id_validation()
    };
    let good_hash = with(
        base.clone(),
        "at_hash",
        json!(at_hash("at-1", Algorithm::RS256)),
    );
    assert!(check(&good_hash, &wants_at).is_ok());
    assert!(check(&good_hash, &v).is_ok());
    assert_eq!(
        check(
            &with(
                base.clone(),
                "at_hash",
                json!(at_hash("at-2", Algorithm::RS256))
            ),
            &wants_at
        ),
        Err(VerifyError::WrongAtHash)
    );
    // The EdDSA form of the hash does not pass for an RS256 token.
    assert_eq!(
        check(
            &with(
                base.clone(),
                "at_hash",
                json!(at_hash("at-1", Algorithm::EdDSA))
            ),
            &wants_at
        ),
        Err(VerifyError::WrongAtHash)
    );
    assert_eq!(check(&base, &wants_at), Err(VerifyError::WrongAtHash));

    // A logout token's `events` claim has no place in an ID token.
    let events = json!({BACKCHANNEL_LOGOUT_EVENT: {}});
    assert_eq!(
        check(&with(base.clone(), "events", events), &v),
        Err(VerifyError::InvalidClaim("events"))
    );

    // Every required claim.
    for claim in ["iss", "sub", "aud", "exp", "iat", "auth_time", "sid"] {
        assert_eq!(
            check(&without(base.clone(), claim), &v),
            Err(VerifyError::MissingClaim(claim)),
            "{claim}"
        );
        assert_eq!(
            check(&with(base.clone(), claim, Value::Null), &v),
            Err(VerifyError::MissingClaim(claim)),
            "{claim}"
        );
    }
    for claim in ["sub", "sid"] {
        assert_eq!(
            check(&with(base.clone(), claim, json!("")), &v),
            Err(VerifyError::MissingClaim(claim))
        );
    }
    assert_eq!(
        check(&with(base.clone(), "auth_time", json!("yesterday")), &v),
        Err(VerifyError::Malformed)
    );
}

#[test]
fn access_token_is_not_an_id_token() {
    let fx = Fixture::new();
    let access = fx
        .ring
        .sign(&AccessTokenClaims {
            iss: ISSUER.into(),
            sub: "user-1".into(),
            aud: CLIENT.into(),
            exp: NOW + 900,
            iat: NOW,
            nbf: NOW,
            jti: new_jti(),
            client_id: CLIENT.into(),
            scope: "openid".into(),
            sid: "sess".into(),
            roles: Vec::new(),
        })
        .expect("sign");
    assert_eq!(
        fx.verify_id(&access, &id_validation()),
        Err(VerifyError::WrongType)
    );
}

// ---------------------------------------------------------------------------------------------
// logout tokens

#[test]
fn logout_token_shape() {
    let fx = Fixture::new();
    for alg in Algorithm::ALL {
        let claims = logout_claims();
        let token = fx.ring.sign_logout_token(&claims, alg).expect("sign");
        let key = fx.key(alg);
        assert_eq!(
            token.split('.').next(),
            Some(
                b64(format!(
                    r#"{{"alg":"{}","typ":"logout+jwt","kid":"{}"}}"#,
                    alg.as_str(),
                    key.kid()
                ))
                .as_str()
            )
        );
        let payload = payload_of(&token);
        assert_eq!(
            names(&payload),
            ["aud", "events", "exp", "iat", "iss", "jti", "sid", "sub"]
        );
        assert_eq!(
            payload["events"],
            json!({"http://schemas.openid.net/event/backchannel-logout": {}})
        );
        assert_eq!(payload["aud"], CLIENT);
        assert_eq!(payload["sid"], "cookie-session-1");
        assert_eq!(payload["jti"], claims.jti.as_str());
        assert_eq!(
            fx.verify_logout(&token, &logout_validation()),
            Ok(claims.clone())
        );
        // Never an ID token or an access token.
        assert_eq!(
            fx.verify_id(&token, &id_validation()),
            Err(VerifyError::WrongType)
        );
        assert_eq!(
            fx.ring.verify(&token, &Validation::new(ISSUER, NOW)),
            Err(VerifyError::WrongType)
        );
    }
    // Every token gets its own jti from the caller: two logout tokens differ.
    let a = fx
        .ring
        .sign_logout_token(&logout_claims(), Algorithm::RS256)
        .expect("sign");
    let b = fx
        .ring
        .sign_logout_token(&logout_claims(), Algorithm::RS256)
        .expect("sign");
    assert_ne!(payload_of(&a)["jti"], payload_of(&b)["jti"]);
}

#[test]
fn logout_token_rules() {
    let fx = Fixture::new();
    let key = &fx.rsa;
    let token = fx
        .ring
        .sign_logout_token(&logout_claims(), Algorithm::RS256)
        .expect("sign");
    let base = payload_of(&token);
    let h = header(key, "logout+jwt");
    let v = logout_validation();
    let check =
        |header: &Value, payload: &Value| fx.verify_logout(&forge(key, header, payload), &v);

    // The forged baseline passes, so each case below fails for its one reason.
    assert!(check(&h, &base).is_ok());
    assert!(check(&header(key, "application/logout+jwt"), &base).is_ok());
    for bad in ["JWT", "at+jwt", "logout-jwt", ""] {
        assert_eq!(
            check(&header(key, bad), &base),
            Err(VerifyError::WrongType),
            "{bad}"
        );
    }
    assert_eq!(
        check(&with(h.clone(), "alg", json!("EdDSA")), &base),
        Err(VerifyError::WrongAlgorithm)
    );
    // Back-Channel Logout §2.4: never a nonce.
    assert_eq!(
        check(&h, &with(base.clone(), "nonce", json!("n"))),
        Err(VerifyError::InvalidClaim("nonce"))
    );
    assert_eq!(
        check(&h, &without(base.clone(), "events")),
        Err(VerifyError::MissingClaim("events"))
    );
    for events in [
        json!({}),
        json!({"http://schemas.openid.net/event/backchannel-logout": true}),
        json!({"http://schemas.openid.net/event/backchannel-logout": null}),
        json!({"http://schemas.openid.net/event/other": {}}),
    ] {
        assert_eq!(
            check(&h, &with(base.clone(), "events", events.clone())),
            Err(VerifyError::InvalidClaim("events")),
            "{events}"
        );
    }
    assert_eq!(
        check(&h, &with(base.clone(), "events", json!([]))),
        Err(VerifyError::Malformed)
    );
    assert_eq!(
        check(&h, &with(base.clone(), "iss", json!("https://evil.test"))),
        Err(VerifyError::WrongIssuer)
    );
    assert_eq!(
        check(&h, &with(base.clone(), "aud", json!("other"))),
        Err(VerifyError::WrongAudience)
    );
    assert_eq!(
        check(&h, &with(base.clone(), "exp", json!(NOW - 2))),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        check(&h, &with(base.clone(), "iat", json!(NOW + 2))),
        Err(VerifyError::NotYetValid)
    );
    for claim in ["iss", "sub", "aud", "iat", "exp", "jti", "sid"] {
        assert_eq!(
            check(&h, &without(base.clone(), claim)),
            Err(VerifyError::MissingClaim(claim)),
            "{claim}"
        );
    }
    // Tampered after signing.
    let parts: Vec<&str> = token.split('.').collect();
    let evil = b64(with(base.clone(), "sid", json!("another-session")).to_string());
    assert_eq!(
        fx.verify_logout(&format!("{}.{evil}.{}", parts[0], parts[2]), &v),
        Err(VerifyError::BadSignature)
    );
}
