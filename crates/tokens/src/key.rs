//! Signing keys: generation, loading from the store, signing and signature checks; and
//! verification-only public keys ([`VerifyingKey`]) built from a published JWK.
//!
//! A key is parsed once, when it is created or loaded; signing and verifying reuse the parsed
//! form, so no DER is decoded on the hot path.

use std::{fmt, str::FromStr, sync::Arc};

use aws_lc_rs::{
    encoding::AsDer as _,
    rand::{self, SystemRandom},
    rsa::KeySize,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair,
        Ed25519KeyPair, KeyPair as _, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256,
        RSA_PKCS1_SHA256, RsaKeyPair, RsaPublicKeyComponents, Signature, VerificationAlgorithm,
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

/// The asymmetric JWS algorithms Latchkey signs with (RFC 9068 forbids `none`, and this
/// service never uses shared-secret HMAC).
///
/// Access tokens use EdDSA or ES256 only ([`Algorithm::signs_access_tokens`]); ID tokens and
/// logout tokens may use any of the three (RS256 is the OIDC default that every relying party
/// supports).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037). The default: small keys, fast, deterministic signatures.
    #[default]
    EdDSA,
    /// ECDSA on P-256 with SHA-256 (RFC 7518 §3.4), for consumers without Ed25519 support.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), 2048-bit keys: the algorithm OIDC
    /// requires every provider to offer for ID tokens. Never used for access tokens.
    RS256,
}

impl Algorithm {
    /// Every supported algorithm.
    pub const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256];

    /// The algorithms access tokens may be signed (and verified) with.
    pub const ACCESS_TOKEN: [Algorithm; 2] = [Algorithm::EdDSA, Algorithm::ES256];

    /// The JOSE `alg` name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
            Algorithm::RS256 => "RS256",
        }
    }

    /// Whether access tokens may use this algorithm: EdDSA and ES256 only. An access token
    /// whose `kid` names an RS256 key is refused, since Latchkey never signs one with it.
    pub const fn signs_access_tokens(self) -> bool {
        matches!(self, Algorithm::EdDSA | Algorithm::ES256)
    }

    fn verification_algorithm(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::EdDSA => &ED25519,
            Algorithm::ES256 => &ECDSA_P256_SHA256_FIXED,
            Algorithm::RS256 => &RSA_PKCS1_2048_8192_SHA256,
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
    Rs256(RsaKeyPair),
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
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng).map(zeroizing_copy),
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map(zeroizing_copy)
            }
            Algorithm::RS256 => generate_rsa_pkcs8(),
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
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(private_pkcs8_der).map_err(bad_key)?;
                let bits = pair.public_modulus_len() * 8;
                if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
                    return Err(TokenError::InvalidPrivateKey(alg));
                }
                // RFC 8017 `RSAPublicKey` DER (SEQUENCE { n, e }), which is also what
                // `ParsedPublicKey` takes for RSA.
                let public = pair.public_key().as_ref().to_vec();
                (Signer::Rs256(pair), public)
            }
        };
        let verifier =
            ParsedPublicKey::new(alg.verification_algorithm(), &public).map_err(bad_key)?;
        let jwk = match &signer {
            Signer::Rs256(pair) => Jwk::from_rsa_components(
                &kid,
                pair.public_key()
                    .modulus()
                    .big_endian_without_leading_zero(),
                pair.public_key()
                    .exponent()
                    .big_endian_without_leading_zero(),
            ),
            _ => Jwk::from_public_key(alg, &kid, &public),
        }
        .ok_or(TokenError::InvalidPrivateKey(alg))?;
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

    /// base64url of the protected header this key puts on every access token.
    pub(crate) fn header_b64(&self) -> &str {
        &self.inner.header_b64
    }

    /// base64url of `{"alg","typ","kid"}` with another `typ` (ID and logout tokens).
    pub(crate) fn header_b64_with_typ(&self, typ: &str) -> Result<String, TokenError> {
        Ok(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&JwsHeader {
            alg: self.algorithm().as_str(),
            typ,
            kid: self.kid(),
        })?))
    }

    /// Signs `message` (the JWS signing input). ES256 signatures are the fixed 64-byte `r || s`
    /// form that JWS requires, not DER; RS256 signatures are as long as the modulus.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Result<RawSignature, TokenError> {
        match &self.inner.signer {
            Signer::Ed25519(pair) => pair.try_sign(message).map(RawSignature::Fixed),
            Signer::Es256(pair) => pair
                .sign(&SystemRandom::new(), message)
                .map(RawSignature::Fixed),
            Signer::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    message,
                    &mut signature,
                )
                .map(|()| RawSignature::Rsa(signature))
            }
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

/// A signature as the cryptographic library returns it. Short-lived, on the stack: boxing the
/// fixed-size form (aws-lc-rs sizes it for its largest algorithm) would cost every access token
/// an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum RawSignature {
    Fixed(Signature),
    Rsa(Vec<u8>),
}

impl AsRef<[u8]> for RawSignature {
    fn as_ref(&self) -> &[u8] {
        match self {
            RawSignature::Fixed(signature) => signature.as_ref(),
            RawSignature::Rsa(signature) => signature,
        }
    }
}

/// Smallest RSA modulus accepted (bits), for stored keys and published JWKs alike.
const RSA_MIN_BITS: usize = 2048;
/// Largest RSA modulus accepted (bits): Latchkey generates 2048-bit keys; this bounds the cost
/// of a key read from a JWKS.
const RSA_MAX_BITS: usize = 4096;

/// A fresh 2048-bit RSA key as PKCS#8 v1 DER (RSA keys have no v2 form).
fn generate_rsa_pkcs8() -> Result<Zeroizing<Vec<u8>>, aws_lc_rs::error::Unspecified> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048)?;
    Ok(zeroizing_copy(&*pair.as_der()?))
}

/// The generated PKCS#8 bytes, in a buffer that is wiped on drop.
fn zeroizing_copy(pkcs8: impl AsRef<[u8]>) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(pkcs8.as_ref().to_vec())
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
    /// Reads one published JWK. Only the three forms Latchkey publishes are accepted:
    /// `{"kty":"OKP","crv":"Ed25519","alg":"EdDSA"}` (RFC 8037),
    /// `{"kty":"EC","crv":"P-256","alg":"ES256"}` (RFC 7518 §6.2) and
    /// `{"kty":"RSA","alg":"RS256","n","e"}` (RFC 7518 §6.3.1), with `use: "sig"`, a valid
    /// `kid`, coordinates of exactly 32 bytes, and every value in strict base64url. `kty`, `crv`
    /// and `alg` must agree and members of another key type are refused, so a key always fixes
    /// the one algorithm its tokens may use. A P-256 point that is not on the curve is refused;
    /// an RSA modulus must have 2048 to 4096 bits and no leading zero byte, the exponent be odd,
    /// at least 3 and at most 32 bits.
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
        if alg != Algorithm::RS256 && (jwk.n.is_some() || jwk.e.is_some()) {
            return Err(bad("unexpected RSA member"));
        }
        let public = match alg {
            Algorithm::RS256 => return Self::from_rsa_jwk(jwk, alg),
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

    /// The RS256 part of [`VerifyingKey::from_jwk`], after the `kid`, `use` and `alg` checks.
    fn from_rsa_jwk(jwk: &Jwk, alg: Algorithm) -> Result<Self, TokenError> {
        let bad = |reason: &'static str| TokenError::InvalidJwk {
            kid: jwk.kid.chars().take(MAX_KID_LEN).collect(),
            reason,
        };
        if jwk.kty != "RSA" {
            return Err(bad("\"kty\" does not match \"alg\""));
        }
        if !jwk.crv.is_empty() || !jwk.x.is_empty() || jwk.y.is_some() {
            return Err(bad("unexpected \"crv\", \"x\" or \"y\" in an RSA key"));
        }
        let component = |value: Option<&str>, name: &'static str| -> Result<Vec<u8>, TokenError> {
            let value = value.ok_or_else(|| bad(name))?;
            let bytes = URL_SAFE_NO_PAD
                .decode(value)
                .map_err(|_| bad("RSA member is not base64url"))?;
            // RFC 7518 §6.3.1: the minimum number of octets, so no leading zero byte.
            match bytes.first() {
                Some(first) if *first != 0 => Ok(bytes),
                _ => Err(bad("RSA member is empty or has a leading zero byte")),
            }
        };
        let n = component(jwk.n.as_deref(), "missing \"n\"")?;
        let e = component(jwk.e.as_deref(), "missing \"e\"")?;
        let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
        if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&bits) {
            return Err(bad("RSA modulus is not 2048 to 4096 bits"));
        }
        if e.len() > 4 {
            return Err(bad("RSA exponent is longer than 32 bits"));
        }
        // An even exponent is no RSA key; e = 1 would make every "signature" the padded digest.
        let exponent = e.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        if exponent < 3 || exponent % 2 == 0 {
            return Err(bad("RSA exponent is not an odd number of at least 3"));
        }
        let verifier = RsaPublicKeyComponents { n: &n, e: &e }
            .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| bad("not a valid public key"))?;
        let jwk = Jwk::from_rsa_components(&jwk.kid, &n, &e)
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
    typ: &'a str,
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
        for bad in ["eddsa", "HS256", "none", "rs256", "PS256", "RS384", ""] {
            let err = bad.parse::<Algorithm>().expect_err("must be refused");
            let msg = err.to_string();
            assert!(
                msg.contains("EdDSA") && msg.contains("ES256") && msg.contains("RS256"),
                "{msg}"
            );
            let serde_err = serde_json::from_str::<Algorithm>(&format!("\"{bad}\""))
                .expect_err("must be refused");
            assert!(
                serde_err
                    .to_string()
                    .contains("expected \"EdDSA\", \"ES256\" or \"RS256\"")
            );
        }
        assert_eq!("RS256".parse::<Algorithm>(), Ok(Algorithm::RS256));
    }

    #[test]
    fn only_eddsa_and_es256_sign_access_tokens() {
        assert!(Algorithm::EdDSA.signs_access_tokens());
        assert!(Algorithm::ES256.signs_access_tokens());
        assert!(!Algorithm::RS256.signs_access_tokens());
        assert!(
            Algorithm::ACCESS_TOKEN
                .iter()
                .all(|alg| alg.signs_access_tokens())
        );
        assert_eq!(Algorithm::ALL.len(), 3);
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
        let load = |alg, der: &[u8]| SigningKey::from_stored("k1".into(), alg, der, now());
        let keys: Vec<SigningKey> = Algorithm::ALL
            .into_iter()
            .map(|alg| SigningKey::generate(alg, now()).expect("generate"))
            .collect();
        // Every key stored under every other algorithm: refused, so a mix-up in the store can
        // never change what a kid stands for.
        for key in &keys {
            for alg in Algorithm::ALL {
                if alg == key.algorithm() {
                    assert!(load(alg, key.private_pkcs8_der()).is_ok());
                } else {
                    assert!(
                        matches!(
                            load(alg, key.private_pkcs8_der()),
                            Err(TokenError::InvalidPrivateKey(a)) if a == alg
                        ),
                        "{} key loaded as {alg}",
                        key.algorithm()
                    );
                }
            }
        }
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
    fn rsa_key_is_2048_bits_and_signs_rs256() {
        let key = SigningKey::generate(Algorithm::RS256, now()).expect("generate");
        let jwk = key.public_jwk();
        let json = serde_json::to_value(&jwk).expect("json");
        let mut names: Vec<_> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "e", "kid", "kty", "n", "use"]);
        assert_eq!(json["kty"], "RSA");
        assert_eq!(json["alg"], "RS256");
        assert_eq!(json["use"], "sig");
        assert_eq!(json["e"], "AQAB");
        let n = URL_SAFE_NO_PAD
            .decode(jwk.n.as_deref().expect("n"))
            .expect("b64");
        assert_eq!(n.len(), 256);
        assert!(n[0] & 0x80 != 0, "a full 2048-bit modulus");

        // PKCS#8 DER, reloadable; signatures are modulus-sized and deterministic (PKCS#1 v1.5).
        let loaded = SigningKey::from_stored(
            key.kid().to_owned(),
            Algorithm::RS256,
            key.private_pkcs8_der(),
            key.created_at(),
        )
        .expect("load");
        assert_eq!(loaded.public_jwk(), jwk);
        let sig = loaded.sign_raw(b"message").expect("sign");
        assert_eq!(sig.as_ref().len(), 256);
        assert_eq!(
            key.sign_raw(b"message").expect("sign").as_ref(),
            sig.as_ref()
        );
        assert!(key.verify_raw(b"message", sig.as_ref()));
        assert!(!key.verify_raw(b"messagf", sig.as_ref()));

        // The same check with aws-lc-rs alone, from n and e: RSASSA-PKCS1-v1_5 with SHA-256.
        let e = URL_SAFE_NO_PAD.decode("AQAB").expect("b64");
        let components = RsaPublicKeyComponents { n: &n, e: &e };
        assert!(
            components
                .verify(&RSA_PKCS1_2048_8192_SHA256, b"message", sig.as_ref())
                .is_ok()
        );
        assert!(
            components
                .verify(
                    &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
                    b"message",
                    sig.as_ref()
                )
                .is_err()
        );
    }

    #[test]
    fn rsa_jwk_edge_cases() {
        let key = SigningKey::generate(Algorithm::RS256, now()).expect("generate");
        let rsa = key.public_jwk();
        let n = URL_SAFE_NO_PAD
            .decode(rsa.n.as_deref().expect("n"))
            .expect("b64");
        let reason = |jwk: &Jwk| match VerifyingKey::from_jwk(jwk) {
            Err(TokenError::InvalidJwk { reason, .. }) => reason,
            other => panic!("expected InvalidJwk, got {other:?}"),
        };
        let with = |f: &dyn Fn(&mut Jwk)| {
            let mut jwk = rsa.clone();
            f(&mut jwk);
            jwk
        };
        // The published key itself is usable and checks what the private key signs.
        let public = VerifyingKey::from_jwk(&rsa).expect("usable");
        assert_eq!(public.algorithm(), Algorithm::RS256);
        assert!(public.verify_raw(b"m", key.sign_raw(b"m").expect("sign").as_ref()));

        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        let cases: Vec<(Jwk, &str)> = vec![
            (
                with(&|j| j.kty = "EC".into()),
                "\"kty\" does not match \"alg\"",
            ),
            (
                with(&|j| j.kty = "OKP".into()),
                "\"kty\" does not match \"alg\"",
            ),
            (with(&|j| j.n = None), "missing \"n\""),
            (with(&|j| j.e = None), "missing \"e\""),
            (
                with(&|j| j.crv = "P-256".into()),
                "unexpected \"crv\", \"x\" or \"y\" in an RSA key",
            ),
            (
                with(&|j| j.x = "AAAA".into()),
                "unexpected \"crv\", \"x\" or \"y\" in an RSA key",
            ),
            (
                with(&|j| j.e = Some(String::new())),
                "RSA member is empty or has a leading zero byte",
            ),
            (
                with(&|j| j.e = Some("AAEAAQ".into())),
                "RSA member is empty or has a leading zero byte",
            ),
            (
                with(&|j| j.e = Some("AQAB=".into())),
                "RSA member is not base64url",
            ),
            (
                with(&|j| j.e = Some(b64(&[1, 0, 0, 0, 1]))),
                "RSA exponent is longer than 32 bits",
            ),
            (
                with(&|j| j.e = Some(b64(&[1]))),
                "RSA exponent is not an odd number of at least 3",
            ),
            (
                with(&|j| j.e = Some(b64(&[1, 0, 0]))),
                "RSA exponent is not an odd number of at least 3",
            ),
            (
                with(&|j| j.n = Some(b64(&[&[0][..], &n].concat()))),
                "RSA member is empty or has a leading zero byte",
            ),
            // 2040 bits, 8192 bits: out of range (the latter is refused before any parsing).
            (
                with(&|j| j.n = Some(b64(&n[1..]))),
                "RSA modulus is not 2048 to 4096 bits",
            ),
            (
                with(&|j| j.n = Some(b64(&[0xff; 1024]))),
                "RSA modulus is not 2048 to 4096 bits",
            ),
        ];
        for (jwk, want) in cases {
            assert_eq!(reason(&jwk), want, "{jwk:?}");
        }
        // 2047 bits (top bit clear) is one bit short.
        let mut short = n.clone();
        short[0] = 0x7f;
        assert_eq!(
            reason(&with(&|j| j.n = Some(b64(&short)))),
            "RSA modulus is not 2048 to 4096 bits"
        );
        // RSA members on an Ed25519 or P-256 key are refused too.
        for alg in Algorithm::ACCESS_TOKEN {
            let mut jwk = SigningKey::generate(alg, now())
                .expect("generate")
                .public_jwk();
            jwk.n = rsa.n.clone();
            jwk.e = rsa.e.clone();
            assert_eq!(reason(&jwk), "unexpected RSA member");
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
