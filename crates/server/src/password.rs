//! Password hashing with Argon2id, off the async runtime, with a bounded number in flight
//! (each hash holds `argon2_memory_kib` of memory).
use crate::config::PasswordConfig;
use crate::error::ApiError;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
use argon2::{Algorithm, Argon2, Params, Version};
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::OpaqueString;
use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub struct Passwords {
    params: Params,
    policy: PasswordConfig,
    /// A real hash of a random password: unknown users are verified against it so that they
    /// cost the same time as a wrong password.
    dummy_hash: Arc<String>,
    permits: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordPolicyError {
    #[error("password must be at least {0} characters")]
    TooShort(usize),
    #[error("password must be at most {0} characters")]
    TooLong(usize),
    #[error("password contains characters that are not allowed (control characters)")]
    Disallowed,
}

impl Passwords {
    pub fn new(policy: &PasswordConfig) -> Result<Self, ApiError> {
        let params = Params::new(
            policy.argon2_memory_kib,
            policy.argon2_iterations,
            policy.argon2_parallelism,
            None,
        )
        .map_err(|e| ApiError::Internal(format!("argon2 parameters: {e}")))?;
        let parallel = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            * 2;
        let random = latchkey_core::Secret::generate().to_text();
        let dummy = argon2(&params)
            .hash_password(random.as_bytes())
            .map_err(|e| ApiError::Internal(format!("argon2: {e}")))?
            .to_string();
        Ok(Self {
            params,
            policy: policy.clone(),
            dummy_hash: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(parallel)),
        })
    }

    /// Checks the policy and returns the normalised form (RFC 8265 OpaqueString: NFC, non-ASCII
    /// spaces mapped), which is what gets hashed. Never truncates.
    pub fn normalize_new(&self, password: &str) -> Result<String, PasswordPolicyError> {
        let chars = password.chars().count();
        if chars > self.policy.max_length {
            return Err(PasswordPolicyError::TooLong(self.policy.max_length));
        }
        let normalized = normalize(password).ok_or(PasswordPolicyError::Disallowed)?;
        if normalized.chars().count() < self.policy.min_length {
            return Err(PasswordPolicyError::TooShort(self.policy.min_length));
        }
        Ok(normalized)
    }

    pub async fn hash(&self, normalized: String) -> Result<String, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            argon2(&params)
                .hash_password(normalized.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }

    /// Verifies `password` against `stored` (or against the dummy hash when `stored` is None,
    /// always returning false). Constant-time comparison happens inside argon2.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<bool, ApiError> {
        if password.chars().count() > self.policy.max_length {
            // Still spend the time, so length does not reveal anything about the account.
            let _ = self
                .verify_inner(String::new(), self.dummy_hash.as_str().to_string())
                .await;
            return Ok(false);
        }
        let candidate = normalize(password).unwrap_or_default();
        match stored {
            Some(hash) => self.verify_inner(candidate, hash.to_string()).await,
            None => {
                let _ = self
                    .verify_inner(candidate, self.dummy_hash.as_str().to_string())
                    .await;
                Ok(false)
            }
        }
    }

    async fn verify_inner(&self, candidate: String, hash: String) -> Result<bool, ApiError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let params = self.params.clone();
        tokio::task::spawn_blocking(move || {
            let parsed = PasswordHash::new(&hash)
                .map_err(|e| ApiError::Internal(format!("stored hash: {e}")))?;
            Ok(argon2(&params)
                .verify_password(candidate.as_bytes(), &parsed)
                .is_ok())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

fn normalize(password: &str) -> Option<String> {
    OpaqueString::enforce(password).ok().map(|p| p.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> Passwords {
        Passwords::new(&PasswordConfig {
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..PasswordConfig::default()
        })
        .expect("params")
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let p = cheap();
        let pw = p.normalize_new("correct horse battery").expect("policy");
        let hash = p.hash(pw).await.expect("hash");
        assert!(hash.starts_with("$argon2id$v=19$"));
        assert!(
            p.verify("correct horse battery", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(
            !p.verify("correct horse batterY", Some(&hash))
                .await
                .expect("verify")
        );
        assert!(
            !p.verify("correct horse battery", None)
                .await
                .expect("verify")
        );
    }

    #[tokio::test]
    async fn long_passwords_are_not_truncated() {
        let p = cheap();
        let long = "x".repeat(1024);
        let hash = p
            .hash(p.normalize_new(&long).expect("policy"))
            .await
            .expect("hash");
        assert!(p.verify(&long, Some(&hash)).await.expect("verify"));
        let mut other = long.clone();
        other.replace_range(1023.., "y");
        assert!(!p.verify(&other, Some(&hash)).await.expect("verify"));
    }

    #[test]
    fn policy() {
        let p = cheap();
        assert_eq!(
            p.normalize_new("short"),
            Err(PasswordPolicyError::TooShort(8))
        );
        assert_eq!(
            p.normalize_new(&"x".repeat(4097)),
            Err(PasswordPolicyError::TooLong(4096))
        );
        assert_eq!(
            p.normalize_new("abc\u{7}defghij"),
            Err(PasswordPolicyError::Disallowed)
        );
        // Composed and decomposed forms are the same password.
        assert_eq!(
            p.normalize_new("caf\u{e9}-caf\u{e9}"),
            p.normalize_new("cafe\u{301}-cafe\u{301}")
        );
    }
}
