//! Signing keys: generation, loading from the store, signing and signature checks; and
//! verification-only public keys ([`VerifyingKey`]) built from a published JWK.
//!
//! A key is parsed once, when it is created or loaded; signing and verifying reuse the parsed
//! form, so no DER is decoded on the hot path.

use std::{fmt, str::FromStr, sync::Arc};

use aws_lc_rs::{
    rand::{self, SystemRandom},
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, ParsedPublicKey, Signature, VerificationAlgorithm,
    },
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use zeroize::Zeroizing;

use crate::{
    error::{ParseAlgorithmError, TokenError},
    jwk::Jwk,
};

/// Longest `kid` accepted, both when loading a key and in a presented token's header.
pub const MAX_KID_LEN: usize = 128;

/// The asymmetric JWS algorithms Latchkey signs access tokens with (RFC 9068 forbids `none`,
/// and this service never uses shared-secret HMAC).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037). The default: small keys, fast, deterministic signatures.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), for consumers without Ed25519 support.
    ES256,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

    /// The JOSE `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        }
    }

    fn verification_algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::EdDSA => &ED25519,
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Exact JOSE names only: `alg` values are case-sensitive (RFC 7515 §4.1.1).
impl FromStr for Algorithm {
    type Err = ParseAlgorithmError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|alg| alg.as_str() == s)
            .ok_or_else(|| ParseAlgorithmError(s.to_owned()))
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// Goes through [`FromStr`] so that a bad config value gets the same message everywhere.
impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

enum Signer {
    Ed25519(Ed25519KeyPair),
    Es256(EcdsaKeyPair),
}

struct Inner {
    created_at: OffsetDateTime,
    /// Kept only so the store can persist the key; wiped from memory on drop.
    pkcs8: Zeroizing<Vec<u8>>,
    signer: Signer,
    /// The public half: `kid`, algorithm, parsed public key and JWK.
    public: VerifyingKey,
    /// base64url of `{"alg":..,"typ":"at+jwt","kid":..}`: the same for every token this key
    /// signs, so it is encoded once.
    header_b64: String,
}

/// A private signing key with its id, algorithm and creation time.
///
/// Cheap to clone (the parsed key is shared). `Debug` shows only public facts.
#[derive(Clone)]
pub struct SigningKey {
    inner: Arc<Inner>,
}

impl SigningKey {
    /// Generates a fresh key pair with a random 22-character url-safe `kid` (128 random bits).
    pub fn generate(alg: Algorithm, created_at: OffsetDateTime) -> Result<Self, TokenError> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng),
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            }
        }
        .map_err(|_| TokenError::KeyGeneration)?;
        let mut kid_bytes = [0u8; 16];
        rand::fill(&mut kid_bytes).map_err(|_| TokenError::KeyGeneration)?;
        let kid = URL_SAFE_NO_PAD.encode(kid_bytes);
        Self::from_stored(kid, alg, pkcs8.as_ref(), created_at)
    }

    /// Loads a key persisted with [`SigningKey::private_pkcs8_der`].
    ///
    /// The DER must be a PKCS#8 (v1 or v2) key of `alg`; a key of another type is refused,
    /// so a mix-up in the store cannot change the algorithm a `kid` stands for.
    pub fn from_stored(
        kid: String,
        alg: Algorithm,
        private_pkcs8_der: &[u8],
        created_at: OffsetDateTime,
    ) -> Result<Self, TokenError> {
        if !valid_kid(&kid) {
            return Err(TokenError::InvalidKeyId(kid));
        }
        let bad_key = |_| TokenError::InvalidPrivateKey(alg);
        let (signer, public) = match alg {
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(private_pkcs8_der).map_err(bad_key)?;
                let public = pair.public_key().as_ref().to_vec();
                (Signer::Ed25519(pair), public)
            }
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private_pkcs8_der)
                        .map_err(bad_key)?;
                // Uncompressed SEC1 point: 0x04 || x || y.
                let public = pair.public_key().as_ref().to_vec();
                (Signer::Es256(pair), public)
            }
        };
        let verifier =
            ParsedPublicKey::new(alg.verification_algorithm(), &public).map_err(bad_key)?;
        let jwk =
            Jwk::from_public_key(alg, &kid, &public).ok_or(TokenError::InvalidPrivateKey(alg))?;
        let header_b64 = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&JwsHeader {
            alg: alg.as_str(),
            typ: crate::jwt::ACCESS_TOKEN_TYP,
            kid: &kid,
        })?);
        Ok(SigningKey {
            inner: Arc::new(Inner {
                created_at,
                pkcs8: Zeroizing::new(private_pkcs8_der.to_vec()),
                signer,
                public: VerifyingKey {
                    inner: Arc::new(VerifyingInner {
                        kid,
                        alg,
                        verifier,
                        jwk,
                    }),
                },
                header_b64,
            }),
        })
    }

    /// The key id published in the JWKS and put in every token header.
    pub fn kid(&self) -> &str {
        self.inner.public.kid()
    }

    pub fn algorithm(&self) -> Algorithm {
        self.inner.public.algorithm()
    }

    pub fn created_at(&self) -> OffsetDateTime {
        self.inner.created_at
    }

    /// The private key as PKCS#8 DER, for persisting in the store. Secret: never log it.
    pub fn private_pkcs8_der(&self) -> &[u8] {
        &self.inner.pkcs8
    }

    /// The public half as a JWK (RFC 7517), for the JWKS endpoint.
    pub fn public_jwk(&self) -> Jwk {
        self.inner.public.jwk().clone()
    }

    /// The public half as a verification-only key (cheap: shared, not copied).
    pub fn verifying_key(&self) -> VerifyingKey {
        self.inner.public.clone()
    }

    pub(crate) fn verifying_key_ref(&self) -> &VerifyingKey {
        &self.inner.public
    }

    /// base64url of the protected header this key puts on every token.
    pub(crate) fn header_b64(&self) -> &str {
        &self.inner.header_b64
    }

    /// Signs `message` (the JWS signing input). ES256 signatures are the fixed 64-byte `r || s`
    /// form that JWS requires, not DER.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Result<Signature, TokenError> {
        match &self.inner.signer {
            Signer::Ed25519(pair) => pair.try_sign(message),
            Signer::Es256(pair) => pair.sign(&SystemRandom::new(), message),
        }
        .map_err(|_| TokenError::Signing)
    }

    /// Checks a JWS signature with this key's algorithm; the token never chooses it.
    #[cfg(test)]
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        self.inner.public.verify_raw(message, signature)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid())
            .field("alg", &self.algorithm())
            .field("created_at", &self.inner.created_at)
            .finish_non_exhaustive()
    }
}

struct VerifyingInner {
    kid: String,
    alg: Algorithm,
    verifier: ParsedPublicKey,
    jwk: Jwk,
}

/// A public key that checks signatures and nothing else: the public half of a
/// [`SigningKey`], or a key read from a published JWKS by a resource server
/// ([`VerifyingKey::from_jwk`]).
///
/// Cheap to clone (the parsed key is shared).
#[derive(Clone)]
pub struct VerifyingKey {
    inner: Arc<VerifyingInner>,
}

impl VerifyingKey {
    /// Reads one published JWK. Only the two forms Latchkey publishes are accepted:
    /// `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA"}` (RFC 8037) and
    /// `{"kty":"EC","crv":"P-256","alg":"ES256"}` (RFC 7518 §6.2), with `use: "sig"`,
    /// a valid `kid`, and coordinates of exactly 32 bytes in strict base64url. `kty`, `crv` and
    /// `alg` must agree, so a key always fixes the one algorithm its tokens may use.
    /// A P-256 point that is not on the curve is refused.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, TokenError> {
        let bad = |reason: &'static str| TokenError::InvalidJwk {
            kid: jwk.kid.chars().take(MAX_KID_LEN).collect(),
            reason,
        };
        if !valid_kid(&jwk.kid) {
            return Err(TokenError::InvalidKeyId(
                jwk.kid.chars().take(MAX_KID_LEN).collect(),
            ));
        }
        if jwk.use_ != "sig" {
            return Err(bad("\"use\" is not \"sig\""));
        }
        let alg: Algorithm = jwk.alg.parse().map_err(|_| bad("unsupported \"alg\""))?;
        let coordinate = |value: &str| -> Result<[u8; 32], TokenError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| bad("coordinate is not base64url"))?;
            <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| bad("coordinate is not 32 bytes"))
        };
        let public = match alg {
            Algorithm::EdDSA => {
                if jwk.kty != "OKP" || jwk.crv != "Ed25519" {
                    return Err(bad("\"kty\"/\"crv\" do not match \"alg\""));
                }
                if jwk.y.is_some() {
                    return Err(bad("unexpected \"y\" in an Ed25519 key"));
                }
                coordinate(&jwk.x)?.to_vec()
            }
            Algorithm::ES256 => {
                if jwk.kty != "EC" || jwk.crv != "P-256" {
                    return Err(bad("\"kty\"/\"crv\" do not match \"alg\""));
                }
                let y = jwk.y.as_deref().ok_or_else(|| bad("missing \"y\""))?;
                let mut point = Vec::with_capacity(65);
                point.push(0x04);
                point.extend_from_slice(&coordinate(&jwk.x)?);
                point.extend_from_slice(&coordinate(y)?);
                point
            }
        };
        let verifier = ParsedPublicKey::new(alg.verification_algorithm(), &public)
            .map_err(|_| bad("not a valid public key"))?;
        // Normalised from the parsed bytes, so `jwk()` shows exactly what is checked.
        let jwk = Jwk::from_public_key(alg, &jwk.kid, &public)
            .ok_or_else(|| bad("not a valid public key"))?;
        Ok(VerifyingKey {
            inner: Arc::new(VerifyingInner {
                kid: jwk.kid.clone(),
                alg,
                verifier,
                jwk,
            }),
        })
    }

    /// The key id tokens name in their header.
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// The only algorithm a token signed by this key may declare.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.alg
    }

    /// The key as a JWK.
    pub fn jwk(&self) -> &Jwk {
        &self.inner.jwk
    }

    /// Checks a JWS signature with this key's algorithm; the token never chooses it.
    pub(crate) fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        self.inner.verifier.verify_sig(message, signature).is_ok()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.inner.kid)
            .field("alg", &self.inner.alg)
            .finish_non_exhaustive()
    }
}

/// Field order is the order in the token: `alg`, `typ`, `kid`.
#[derive(Serialize)]
struct JwsHeader<'a> {
    alg: &'static str,
    typ: &'static str,
    kid: &'a str,
}

/// 1 to [`MAX_KID_LEN`] printable ASCII characters: a `kid` ends up in JSON, logs and URLs.
fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID_LEN && kid.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000).expect("valid timestamp")
    }

    #[test]
    fn algorithm_names_roundtrip() {
        for alg in Algorithm::ALL {
            assert_eq!(alg.to_string().parse::<Algorithm>(), Ok(alg));
            let json = serde_json::to_string(&alg).expect("serialize");
            assert_eq!(json, format!("\"{alg}\""));
            assert_eq!(
                serde_json::from_str::<Algorithm>(&json).expect("deserialize"),
                alg
            );
        }
        assert_eq!(Algorithm::default(), Algorithm::EdDSA);
    }

    #[test]
    fn algorithm_parse_error_lists_accepted_values() {
        for bad in ["eddsa", "HS256", "none", "RS256", ""] {
            let err = bad.parse::<Algorithm>().expect_err("must be refused");
            let msg = err.to_string();
            assert!(msg.contains("EdDSA") && msg.contains("ES256"), "{msg}");
            let serde_err = serde_json::from_str::<Algorithm>(&format!("\"{bad}\""))
                .expect_err("must be refused");
            assert!(
                serde_err
                    .to_string()
                    .contains("expected \"EdDSA\" or \"ES256\"")
            );
        }
    }

    #[test]
    fn generated_kid_is_random_and_url_safe() {
        for alg in Algorithm::ALL {
            let a = SigningKey::generate(alg, now()).expect("generate");
            let b = SigningKey::generate(alg, now()).expect("generate");
            assert_ne!(a.kid(), b.kid());
            assert!(a.kid().len() >= 22);
            assert!(
                a.kid()
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
            );
            assert_eq!(a.algorithm(), alg);
            assert_eq!(a.created_at(), now());
        }
    }

    #[test]
    fn from_stored_roundtrip_keeps_identity() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg, now()).expect("generate");
            let loaded = SigningKey::from_stored(
                key.kid().to_owned(),
                alg,
                key.private_pkcs8_der(),
                key.created_at(),
            )
            .expect("load");
            assert_eq!(loaded.kid(), key.kid());
            assert_eq!(loaded.algorithm(), alg);
            assert_eq!(loaded.private_pkcs8_der(), key.private_pkcs8_der());
            assert_eq!(loaded.public_jwk().x, key.public_jwk().x);
            assert_eq!(loaded.public_jwk().y, key.public_jwk().y);
            let sig = loaded.sign_raw(b"message").expect("sign");
            assert!(key.verify_raw(b"message", sig.as_ref()));
            assert!(!key.verify_raw(b"messagf", sig.as_ref()));
        }
    }

    #[test]
    fn from_stored_refuses_wrong_algorithm_and_garbage() {
        let ed = SigningKey::generate(Algorithm::EdDSA, now()).expect("generate");
        let ec = SigningKey::generate(Algorithm::ES256, now()).expect("generate");
        let load = |alg, der: &[u8]| SigningKey::from_stored("k1".into(), alg, der, now());
        assert!(matches!(
            load(Algorithm::ES256, ed.private_pkcs8_der()),
            Err(TokenError::InvalidPrivateKey(Algorithm::ES256))
        ));
        assert!(matches!(
            load(Algorithm::EdDSA, ec.private_pkcs8_der()),
            Err(TokenError::InvalidPrivateKey(Algorithm::EdDSA))
        ));
        for alg in Algorithm::ALL {
            assert!(matches!(
                load(alg, b"not a key"),
                Err(TokenError::InvalidPrivateKey(_))
            ));
            assert!(matches!(
                load(alg, &[]),
                Err(TokenError::InvalidPrivateKey(_))
            ));
        }
    }

    #[test]
    fn from_stored_refuses_bad_kids() {
        let key = SigningKey::generate(Algorithm::EdDSA, now()).expect("generate");
        for kid in [
            String::new(),
            "a".repeat(MAX_KID_LEN + 1),
            "a b".into(),
            "é".into(),
        ] {
            let res =
                SigningKey::from_stored(kid, Algorithm::EdDSA, key.private_pkcs8_der(), now());
            assert!(matches!(res, Err(TokenError::InvalidKeyId(_))));
        }
        let longest = "a".repeat(MAX_KID_LEN);
        assert!(
            SigningKey::from_stored(longest, Algorithm::EdDSA, key.private_pkcs8_der(), now())
                .is_ok()
        );
    }

    #[test]
    fn debug_does_not_show_private_key() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg, now()).expect("generate");
            let debug = format!("{key:?} {key:#?}");
            assert!(debug.contains(key.kid()));
            let der = key.private_pkcs8_der();
            let forms = [
                format!("{der:?}"),
                format!("{der:x?}"),
                URL_SAFE_NO_PAD.encode(der),
                base64::engine::general_purpose::STANDARD.encode(der),
                der.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            ];
            for form in forms {
                assert!(!debug.contains(&form), "Debug leaks the key: {debug}");
            }
            // No run of 12 key bytes either, as a decimal list (what a derived Debug of a
            // byte slice prints) or as hex.
            for window in der.windows(12) {
                let decimal = window.iter().map(u8::to_string).collect::<Vec<_>>();
                assert!(!debug.contains(&decimal.join(", ")));
                let hex: String = window.iter().map(|b| format!("{b:02x}")).collect();
                assert!(!debug.contains(&hex));
            }
        }
    }

    #[test]
    fn verifying_key_from_published_jwk() {
        for alg in Algorithm::ALL {
            let key = SigningKey::generate(alg, now()).expect("generate");
            let jwk: Jwk =
                serde_json::from_str(&serde_json::to_string(&key.public_jwk()).expect("json"))
                    .expect("parse");
            let public = VerifyingKey::from_jwk(&jwk).expect("usable");
            assert_eq!(public.kid(), key.kid());
            assert_eq!(public.algorithm(), alg);
            assert_eq!(public.jwk(), &key.public_jwk());
            assert_eq!(key.verifying_key().kid(), key.kid());
            let sig = key.sign_raw(b"message").expect("sign");
            assert!(public.verify_raw(b"message", sig.as_ref()));
            assert!(!public.verify_raw(b"messagf", sig.as_ref()));
            let debug = format!("{public:?}");
            assert!(debug.contains(key.kid()) && debug.contains("VerifyingKey"));
        }
    }

    #[test]
    fn verifying_key_refuses_malformed_jwks() {
        let ed = SigningKey::generate(Algorithm::EdDSA, now())
            .expect("generate")
            .public_jwk();
        let ec = SigningKey::generate(Algorithm::ES256, now())
            .expect("generate")
            .public_jwk();
        let invalid = |jwk: Jwk| match VerifyingKey::from_jwk(&jwk) {
            Err(TokenError::InvalidJwk { reason, .. }) => reason,
            other => panic!("expected InvalidJwk, got {other:?}"),
        };
        let mut cases: Vec<Jwk> = Vec::new();
        for (field, value) in [
            ("alg", "none"),
            ("alg", "HS256"),
            ("alg", "RS256"),
            ("alg", "eddsa"),
            ("alg", "ES256"),
            ("use", "enc"),
            ("use", ""),
            ("kty", "EC"),
            ("crv", "X25519"),
            ("x", "AAAA"),
            ("x", "not base64!"),
        ] {
            let mut jwk = ed.clone();
            match field {
                "alg" => jwk.alg = value.into(),
                "use" => jwk.use_ = value.into(),
                "kty" => jwk.kty = value.into(),
                "crv" => jwk.crv = value.into(),
                _ => jwk.x = value.into(),
            }
            cases.push(jwk);
        }
        let mut with_y = ed.clone();
        with_y.y = ec.y.clone();
        cases.push(with_y);
        let mut no_y = ec.clone();
        no_y.y = None;
        cases.push(no_y);
        let mut wrong_alg = ec.clone();
        wrong_alg.alg = "EdDSA".into();
        cases.push(wrong_alg);
        let mut wrong_crv = ec.clone();
        wrong_crv.crv = "P-384".into();
        cases.push(wrong_crv);
        // A point that is not on the curve: y flipped.
        let mut off_curve = ec.clone();
        let mut y = URL_SAFE_NO_PAD
            .decode(ec.y.as_deref().expect("y"))
            .expect("b64");
        y[31] ^= 1;
        off_curve.y = Some(URL_SAFE_NO_PAD.encode(&y));
        cases.push(off_curve);
        let mut padded = ed.clone();
        padded.x.push('=');
        cases.push(padded);
        for jwk in cases {
            let _ = invalid(jwk);
        }
        for kid in ["", "a b", &"k".repeat(MAX_KID_LEN + 1)] {
            let mut jwk = ed.clone();
            jwk.kid = kid.into();
            assert!(matches!(
                VerifyingKey::from_jwk(&jwk),
                Err(TokenError::InvalidKeyId(_))
            ));
        }
    }
}
