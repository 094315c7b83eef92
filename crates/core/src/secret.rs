//! Bearer secrets (refresh tokens, cookie secrets, CSRF tokens) and their at-rest form.
//!
//! A secret is 256 random bits, shown to its holder once as 43 base64url characters and stored
//! only as its SHA-256. Looking a secret up by its hash means no secret-dependent comparison
//! ever happens on the plaintext.
use aws_lc_rs::{aead, hmac};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

pub const SECRET_BYTES: usize = 32;
/// Length of the base64url (unpadded) text form of a secret.
pub const SECRET_TEXT_LEN: usize = 43;

/// A freshly generated or presented secret. `Debug` never shows it.
#[derive(Clone)]
pub struct Secret([u8; SECRET_BYTES]);

impl Secret {
    /// 256 bits from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; SECRET_BYTES];
        // The OS RNG failing is unrecoverable; continuing with a weak secret would be worse.
        #[allow(clippy::expect_used)]
        getrandom::fill(&mut bytes).expect("operating system random number generator failed");
        Self(bytes)
    }

    /// Parses the text form; anything that is not exactly 43 base64url characters is refused.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != SECRET_TEXT_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).ok()?;
        Some(Self(bytes.try_into().ok()?))
    }

    pub fn to_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash(Sha256::digest(self.0).into())
    }

    /// A second secret bound to this one: HMAC-SHA256(self, label). Knowing the derived value
    /// reveals nothing about this one (used for the CSRF token of a cookie session).
    pub fn derive(&self, label: &[u8]) -> Secret {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &self.0);
        let tag = hmac::sign(&key, label);
        let mut bytes = [0u8; SECRET_BYTES];
        bytes.copy_from_slice(tag.as_ref());
        Self(bytes)
    }

    /// Constant-time comparison with another secret.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// SHA-256 of a secret: what the store keeps and indexes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for SecretHash {
    // A prefix is enough to correlate log lines; the hash itself opens nothing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SecretHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("sealed successor could not be opened")]
pub struct SealError;

const SEAL_LABEL: &[u8] = b"latchkey/v1/successor-seal";
const NONCE_LEN: usize = 12;

fn seal_key(predecessor: &Secret) -> aead::LessSafeKey {
    // HMAC(predecessor, label) is independent of SHA-256(predecessor), so the stored hash
    // does not reveal the key: only the holder of the predecessor can open the seal.
    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &predecessor.0);
    let key_bytes = hmac::sign(&mac_key, SEAL_LABEL);
    #[allow(clippy::expect_used)]
    let unbound = aead::UnboundKey::new(&aead::AES_256_GCM, key_bytes.as_ref())
        .expect("HMAC-SHA256 output is a valid AES-256 key");
    aead::LessSafeKey::new(unbound)
}

/// Encrypts the successor refresh token under a key derived from its predecessor, so the grace
/// window can hand the same successor out again without any token kept in plaintext at rest.
pub fn seal_successor(predecessor: &Secret, successor: &Secret) -> Vec<u8> {
    let key = seal_key(predecessor);
    let mut nonce = [0u8; NONCE_LEN];
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut nonce).expect("operating system random number generator failed");
    let mut in_out = successor.0.to_vec();
    #[allow(clippy::expect_used)]
    key.seal_in_place_append_tag(
        aead::Nonce::assume_unique_for_key(nonce),
        aead::Aad::from(predecessor.hash().0),
        &mut in_out,
    )
    .expect("AES-GCM sealing of 32 bytes cannot fail");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&in_out);
    sealed
}

/// Opens what [`seal_successor`] produced, given the same predecessor.
pub fn open_successor(predecessor: &Secret, sealed: &[u8]) -> Result<Secret, SealError> {
    if sealed.len() < NONCE_LEN {
        return Err(SealError);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
    let mut in_out = ciphertext.to_vec();
    let plain = seal_key(predecessor)
        .open_in_place(nonce, aead::Aad::from(predecessor.hash().0), &mut in_out)
        .map_err(|_| SealError)?;
    Ok(Secret(plain.try_into().map_err(|_| SealError)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_roundtrips_and_is_43_chars() {
        let s = Secret::generate();
        let text = s.to_text();
        assert_eq!(text.len(), SECRET_TEXT_LEN);
        let back = Secret::parse(&text).expect("parses");
        assert!(back.ct_eq(&s));
        assert_eq!(back.hash(), s.hash());
    }

    #[test]
    fn secrets_are_distinct() {
        assert_ne!(Secret::generate().hash(), Secret::generate().hash());
    }

    #[test]
    fn parse_refuses_malformed_text() {
        for bad in [
            "",
            "abc",
            &"A".repeat(42),
            &"A".repeat(44),
            &"+".repeat(43),
            &"é".repeat(22),
        ] {
            assert!(Secret::parse(bad).is_none(), "{bad:?} accepted");
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let s = Secret::generate();
        assert!(!format!("{s:?}").contains(&s.to_text()));
        assert!(!format!("{:?}", s.hash()).contains(&hex(&s.hash().0)));
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn hash_is_sha256_of_raw_bytes() {
        let s = Secret::parse(&"A".repeat(43)).expect("parses");
        // SHA-256 of 32 zero bytes
        assert_eq!(
            hex(&s.hash().0),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
    }

    #[test]
    fn derived_secrets_are_stable_distinct_and_label_bound() {
        let s = Secret::generate();
        assert!(s.derive(b"a").ct_eq(&s.derive(b"a")));
        assert!(!s.derive(b"a").ct_eq(&s.derive(b"b")));
        assert!(!s.derive(b"a").ct_eq(&s));
        assert!(!Secret::generate().derive(b"a").ct_eq(&s.derive(b"a")));
    }

    #[test]
    fn seal_opens_only_with_the_predecessor() {
        let pred = Secret::generate();
        let succ = Secret::generate();
        let sealed = seal_successor(&pred, &succ);
        assert!(
            !sealed.windows(32).any(|w| w == succ.0),
            "plaintext visible in seal"
        );
        assert!(open_successor(&pred, &sealed).expect("opens").ct_eq(&succ));
        assert_eq!(
            open_successor(&Secret::generate(), &sealed).err(),
            Some(SealError)
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(open_successor(&pred, &tampered).err(), Some(SealError));
        assert_eq!(open_successor(&pred, &sealed[..5]).err(), Some(SealError));
    }
}
