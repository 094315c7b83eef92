//! Usernames are compared after PRECIS UsernameCaseMapped (RFC 8265): width mapping, case
//! mapping and NFC, so that look-alike forms ("Alice", "ＡＬＩＣＥ") name one account.
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;
use std::fmt;

pub const MAX_USERNAME_CHARS: usize = 64;

#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Username(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsernameError {
    #[error("username must not be empty")]
    Empty,
    #[error("username must be at most {MAX_USERNAME_CHARS} characters")]
    TooLong,
    #[error(
        "username contains characters that are not allowed (letters, digits and symbols, no spaces or control characters)"
    )]
    Disallowed,
}

impl Username {
    /// Normalises a username as typed into its canonical, comparable form.
    pub fn parse(input: &str) -> Result<Self, UsernameError> {
        if input.is_empty() {
            return Err(UsernameError::Empty);
        }
        // Bound the work before PRECIS runs over attacker-sized input.
        if input.chars().count() > MAX_USERNAME_CHARS * 4 {
            return Err(UsernameError::TooLong);
        }
        let normalized =
            UsernameCaseMapped::enforce(input).map_err(|_| UsernameError::Disallowed)?;
        let normalized = normalized.into_owned();
        if normalized.is_empty() {
            return Err(UsernameError::Empty);
        }
        if normalized.chars().count() > MAX_USERNAME_CHARS {
            return Err(UsernameError::TooLong);
        }
        Ok(Self(normalized))
    }

    /// Wraps an already-normalised name read back from the store.
    pub fn from_normalized(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({:?})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_width_variants_are_one_name() {
        let a = Username::parse("alice").expect("valid");
        assert_eq!(Username::parse("Alice").expect("valid"), a);
        assert_eq!(Username::parse("ALICE").expect("valid"), a);
        assert_eq!(Username::parse("ａｌｉｃｅ").expect("valid"), a); // fullwidth
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_name() {
        assert_eq!(
            Username::parse("jos\u{e9}").expect("valid"),
            Username::parse("jose\u{301}").expect("valid")
        );
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(Username::parse("a b"), Err(UsernameError::Disallowed));
        assert_eq!(Username::parse("a\u{0}b"), Err(UsernameError::Disallowed));
        assert_eq!(Username::parse("a\nb"), Err(UsernameError::Disallowed));
        assert_eq!(
            Username::parse(&"a".repeat(65)),
            Err(UsernameError::TooLong)
        );
        assert_eq!(
            Username::parse(&"a".repeat(10_000)),
            Err(UsernameError::TooLong)
        );
        assert!(Username::parse(&"a".repeat(64)).is_ok());
    }
}
