//! Reading Latchkey's JWKS into a [`PublicKeySet`].
//!
//! Lenient per key, strict per set: a key this crate cannot use (another key type, a future
//! algorithm) is skipped with a warning rather than taking every other key down with it; a
//! `kid` that appears twice is dropped entirely, since either key could be the impostor.
//!
//! Latchkey's RS256 keys (they sign OpenID Connect ID tokens) are read like the others, so that
//! an access token naming one is refused at once as `WrongAlgorithm` (access tokens are EdDSA or
//! ES256 only) instead of sending the verifier to re-read the JWKS for an "unknown" kid. The set
//! must hold at least one EdDSA or ES256 key, since only those can sign access tokens.

use latchkey_tokens::{Jwk, PublicKeySet, VerifyingKey};
use serde::Deserialize;

/// Largest JWKS document read.
pub(crate) const MAX_JWKS_BYTES: usize = 256 * 1024;
/// More keys than this is not a Latchkey JWKS.
const MAX_KEYS: usize = 100;

#[derive(Deserialize)]
struct Document {
    keys: Vec<serde_json::Value>,
}

/// Parses a JWKS body; fails when it is not a JWKS or has no usable key.
pub(crate) fn parse(body: &[u8]) -> Result<PublicKeySet, String> {
    let document: Document =
        serde_json::from_slice(body).map_err(|e| format!("not a JWKS document ({e})"))?;
    if document.keys.len() > MAX_KEYS {
        return Err(format!(
            "{} keys, over the limit of {MAX_KEYS}",
            document.keys.len()
        ));
    }
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(document.keys.len());
    let mut duplicated: Vec<String> = Vec::new();
    for value in document.keys {
        let key = serde_json::from_value::<Jwk>(value)
            .map_err(|e| e.to_string())
            .and_then(|jwk| VerifyingKey::from_jwk(&jwk).map_err(|e| e.to_string()));
        match key {
            Ok(key) if keys.iter().any(|k| k.kid() == key.kid()) => {
                duplicated.push(key.kid().to_owned());
            }
            Ok(key) => keys.push(key),
            Err(reason) => tracing::warn!(%reason, "skipping an unusable key of the JWKS"),
        }
    }
    if !duplicated.is_empty() {
        tracing::warn!(kids = ?duplicated, "JWKS names a kid more than once; ignoring those keys");
        keys.retain(|k| !duplicated.iter().any(|d| d == k.kid()));
    }
    if !keys.iter().any(|k| k.algorithm().signs_access_tokens()) {
        return Err("no usable key (expected EdDSA or ES256 keys with use \"sig\")".into());
    }
    PublicKeySet::new(keys).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use latchkey_tokens::{Algorithm, SigningKey};
    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;

    fn jwk(alg: Algorithm) -> serde_json::Value {
        let key = SigningKey::generate(alg, OffsetDateTime::UNIX_EPOCH).expect("key");
        serde_json::to_value(key.public_jwk()).expect("json")
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let rsa = json!({"kty":"RSA","kid":"r1","alg":"RS256","use":"sig","n":"AQAB","e":"AQAB"});
        let body = json!({"keys":[rsa, jwk(Algorithm::EdDSA), jwk(Algorithm::ES256)]});
        let set = parse(body.to_string().as_bytes()).expect("usable");
        assert_eq!(set.len(), 2);
    }

    #[test]
    fn rsa_keys_are_kept_but_never_enough() {
        let rsa = jwk(Algorithm::RS256);
        let body = json!({"keys":[rsa.clone(), jwk(Algorithm::EdDSA), jwk(Algorithm::ES256)]});
        let set = parse(body.to_string().as_bytes()).expect("usable");
        assert_eq!(set.len(), 3);
        let kid = rsa["kid"].as_str().expect("kid");
        assert_eq!(
            set.get(kid).map(latchkey_tokens::VerifyingKey::algorithm),
            Some(Algorithm::RS256)
        );
        // Only keys that cannot sign access tokens: nothing to verify with.
        let body = json!({"keys":[rsa, jwk(Algorithm::RS256)]});
        let err = parse(body.to_string().as_bytes()).expect_err("unusable");
        assert!(err.contains("no usable key"), "{err}");
    }

    #[test]
    fn duplicated_kids_are_dropped() {
        let a = jwk(Algorithm::EdDSA);
        let mut twin = jwk(Algorithm::EdDSA);
        twin["kid"] = a["kid"].clone();
        let other = jwk(Algorithm::EdDSA);
        let body = json!({"keys":[a.clone(), twin, other.clone()]});
        let set = parse(body.to_string().as_bytes()).expect("usable");
        assert_eq!(set.len(), 1);
        assert!(set.get(other["kid"].as_str().expect("kid")).is_some());
        let body = json!({"keys":[a.clone(), a]});
        assert!(parse(body.to_string().as_bytes()).is_err());
    }

    #[test]
    fn not_a_jwks_is_an_error() {
        for body in [
            "",
            "[]",
            "{}",
            "{\"keys\":{}}",
            "{\"keys\":[]}",
            "{\"keys\":[1,2]}",
        ] {
            assert!(parse(body.as_bytes()).is_err(), "{body}");
        }
        let many = json!({"keys": vec![jwk(Algorithm::EdDSA); MAX_KEYS + 1]});
        assert!(parse(many.to_string().as_bytes()).is_err());
    }
}
