//! Public keys as JSON Web Keys (RFC 7517), in the forms RFC 8037 (Ed25519), RFC 7518 §6.2
//! (P-256) and RFC 7518 §6.3 (RSA) define, so any JOSE library can verify Latchkey's tokens.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use crate::key::Algorithm;

/// One public key of the JWKS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Jwk {
    /// `OKP` for Ed25519, `EC` for P-256, `RSA` for RS256 keys.
    pub kty: String,
    /// `Ed25519` or `P-256`; empty (and not serialized) for RSA keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    /// Ed25519: the raw 32-byte public key; P-256: the 32-byte big-endian x coordinate;
    /// base64url without padding. Empty (and not serialized) for RSA keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    /// P-256 only: the 32-byte big-endian y coordinate, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// RSA only: the modulus, big-endian without leading zero bytes, base64url without padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    /// RSA only: the public exponent, big-endian without leading zero bytes, base64url without
    /// padding (`AQAB` for 65537).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    pub kid: String,
    /// `EdDSA` or `ES256`: pinned so that consumers never let a token choose the algorithm.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub use_: String,
}

/// The document served at `/.well-known/jwks.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl Jwk {
    /// Builds the JWK from aws-lc-rs's public key bytes: 32 raw bytes for Ed25519, the
    /// uncompressed SEC1 point `0x04 || x || y` for P-256. `None` if the bytes have another shape,
    /// and for RSA (see [`Jwk::from_rsa_components`]).
    pub(crate) fn from_public_key(alg: Algorithm, kid: &str, public: &[u8]) -> Option<Jwk> {
        let (kty, crv, x, y) = match alg {
            Algorithm::EdDSA => {
                if public.len() != 32 {
                    return None;
                }
                ("OKP", "Ed25519", public, None)
            }
            Algorithm::ES256 => match public {
                [0x04, point @ ..] if point.len() == 64 => {
                    let (x, y) = point.split_at(32);
                    ("EC", "P-256", x, Some(y))
                }
                _ => return None,
            },
            Algorithm::RS256 => return None,
        };
        Some(Jwk {
            kty: kty.to_owned(),
            crv: crv.to_owned(),
            x: URL_SAFE_NO_PAD.encode(x),
            y: y.map(|y| URL_SAFE_NO_PAD.encode(y)),
            n: None,
            e: None,
            kid: kid.to_owned(),
            alg: alg.as_str().to_owned(),
            use_: "sig".to_owned(),
        })
    }

    /// An RS256 JWK from the modulus and exponent, big-endian without leading zeros
    /// (RFC 7518 §6.3.1). `None` if either is empty or starts with a zero byte.
    pub(crate) fn from_rsa_components(kid: &str, n: &[u8], e: &[u8]) -> Option<Jwk> {
        if n.first().is_none_or(|b| *b == 0) || e.first().is_none_or(|b| *b == 0) {
            return None;
        }
        Some(Jwk {
            kty: "RSA".to_owned(),
            crv: String::new(),
            x: String::new(),
            y: None,
            n: Some(URL_SAFE_NO_PAD.encode(n)),
            e: Some(URL_SAFE_NO_PAD.encode(e)),
            kid: kid.to_owned(),
            alg: Algorithm::RS256.as_str().to_owned(),
            use_: "sig".to_owned(),
        })
    }
}

impl Jwk {
    /// The RFC 7638 JWK thumbprint: SHA-256 of the required members in lexicographic order,
    /// no whitespace, base64url without padding. Unique to the key material, so a `kid`
    /// made from it never names two different keys.
    pub fn thumbprint(&self) -> String {
        // serde_json writes the `String`s escaped as RFC 7638 requires (these values never
        // need escaping anyway: fixed names and base64url).
        // The required members of each key type, and only those (RFC 7638 §3.2).
        let canonical = match (&self.n, &self.e, &self.y) {
            (Some(n), Some(e), _) if self.kty == "RSA" => {
                serde_json::json!({"e": e, "kty": self.kty, "n": n})
            }
            (_, _, Some(y)) => {
                serde_json::json!({"crv": self.crv, "kty": self.kty, "x": self.x, "y": y})
            }
            _ => serde_json::json!({"crv": self.crv, "kty": self.kty, "x": self.x}),
        };
        // `json!` objects are BTreeMaps unless serde_json's `preserve_order` is on; write
        // the members in order by hand to be independent of that.
        let mut text = String::from("{");
        if let serde_json::Value::Object(map) = &canonical {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push_str(&serde_json::Value::String(k.clone()).to_string());
                text.push(':');
                text.push_str(&v.to_string());
            }
        }
        text.push('}');
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes());
        URL_SAFE_NO_PAD.encode(digest.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;
    use time::OffsetDateTime;

    use super::*;
    use crate::SigningKey;

    fn decode(s: &Value) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(s.as_str().expect("string"))
            .expect("base64url without padding")
    }

    #[test]
    fn ed25519_jwk_shape() {
        let key = SigningKey::generate(Algorithm::EdDSA, OffsetDateTime::UNIX_EPOCH).expect("key");
        let json = serde_json::to_value(key.public_jwk()).expect("json");
        let obj = json.as_object().expect("object");
        let mut names: Vec<_> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x"]);
        assert_eq!(obj["kty"], "OKP");
        assert_eq!(obj["crv"], "Ed25519");
        assert_eq!(obj["alg"], "EdDSA");
        assert_eq!(obj["use"], "sig");
        assert_eq!(obj["kid"], key.kid());
        assert_eq!(decode(&obj["x"]).len(), 32);
        assert_eq!(obj["x"].as_str().map(str::len), Some(43));
    }

    #[test]
    fn p256_jwk_shape() {
        let key = SigningKey::generate(Algorithm::ES256, OffsetDateTime::UNIX_EPOCH).expect("key");
        let json = serde_json::to_value(key.public_jwk()).expect("json");
        let obj = json.as_object().expect("object");
        let mut names: Vec<_> = obj.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
        assert_eq!(obj["kty"], "EC");
        assert_eq!(obj["crv"], "P-256");
        assert_eq!(obj["alg"], "ES256");
        assert_eq!(obj["use"], "sig");
        assert_eq!(obj["kid"], key.kid());
        // Coordinates are always 32 bytes, even when the leading byte is zero.
        assert_eq!(decode(&obj["x"]).len(), 32);
        assert_eq!(decode(&obj["y"]).len(), 32);
    }

    #[test]
    fn jwk_set_roundtrips_through_json() {
        let set = JwkSet {
            keys: Algorithm::ALL
                .into_iter()
                .map(|alg| {
                    SigningKey::generate(alg, OffsetDateTime::UNIX_EPOCH)
                        .expect("key")
                        .public_jwk()
                })
                .collect(),
        };
        let text = serde_json::to_string(&set).expect("json");
        assert!(text.starts_with("{\"keys\":["));
        let back: JwkSet = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, set);
    }

    /// RFC 8037 Appendix A.3: the thumbprint of its Ed25519 example key.
    #[test]
    fn rfc_8037_thumbprint() {
        let jwk = Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into(),
            y: None,
            n: None,
            e: None,
            kid: "ignored".into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        };
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        // RFC 7638 §3.1: its RSA example key.
        let rsa = Jwk {
            kty: "RSA".into(),
            crv: String::new(),
            x: String::new(),
            y: None,
            n: Some("0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw".into()),
            e: Some("AQAB".into()),
            kid: "2011-04-29".into(),
            alg: "RS256".into(),
            use_: "sig".into(),
        };
        assert_eq!(
            rsa.thumbprint(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let p256 = SigningKey::generate(Algorithm::ES256, OffsetDateTime::UNIX_EPOCH).expect("key");
        let other =
            SigningKey::generate(Algorithm::ES256, OffsetDateTime::UNIX_EPOCH).expect("key");
        assert_eq!(p256.public_jwk().thumbprint().len(), 43);
        assert_ne!(
            p256.public_jwk().thumbprint(),
            other.public_jwk().thumbprint()
        );
    }

    #[test]
    fn wrong_public_key_shapes_are_refused() {
        assert!(Jwk::from_public_key(Algorithm::EdDSA, "k", &[0; 31]).is_none());
        assert!(Jwk::from_public_key(Algorithm::ES256, "k", &[0x04; 64]).is_none());
        assert!(Jwk::from_public_key(Algorithm::ES256, "k", &[0x02; 65]).is_none());
        assert!(Jwk::from_public_key(Algorithm::ES256, "k", &[0x04; 65]).is_some());
        // RSA keys have their own constructor; n and e take no leading zero byte.
        assert!(Jwk::from_public_key(Algorithm::RS256, "k", &[0x04; 65]).is_none());
        assert!(Jwk::from_rsa_components("k", &[0, 0xc1], &[1, 0, 1]).is_none());
        assert!(Jwk::from_rsa_components("k", &[0xc1], &[0, 1]).is_none());
        assert!(Jwk::from_rsa_components("k", &[], &[1, 0, 1]).is_none());
        let rsa = Jwk::from_rsa_components("k", &[0xc1, 0x01], &[1, 0, 1]).expect("shape");
        assert_eq!(
            serde_json::to_value(&rsa).expect("json"),
            serde_json::json!({"kty":"RSA","n":"wQE","e":"AQAB","kid":"k","alg":"RS256","use":"sig"})
        );
    }
}
