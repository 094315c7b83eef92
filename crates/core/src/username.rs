//! Usernames are compared after Unicode NFKC normalisation and case folding (API.md), then
//! checked by PRECIS UsernameCaseMapped (RFC 8265), so that look-alike forms ("Alice",
//! "ＡＬＩＣＥ", the Kelvin sign in "\u{212A}arl", mathematical letters "𝐚lice") name one
//! account, and a form PRECIS alone would refuse (compatibility characters) reaches the
//! account its NFKC form names.
use precis_core::profile::PrecisFastInvocation;
use precis_profiles::UsernameCaseMapped;
use std::fmt;
use unicode_normalization::UnicodeNormalization;

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
        let folded = nfkc_casefold(input);
        let normalized =
            UsernameCaseMapped::enforce(folded.as_str()).map_err(|_| UsernameError::Disallowed)?;
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

/// NFKC, full case folding, NFKC again (Unicode's NFKC_Casefold, closely): after NFKC,
/// Unicode lowercase equals full case folding except for the few code points mapped here.
fn nfkc_casefold(input: &str) -> String {
    let lowered = input.nfkc().collect::<String>().to_lowercase();
    let mut folded = String::with_capacity(lowered.len());
    for c in lowered.chars() {
        match c {
            'ß' | '\u{1E9E}' => folded.push_str("ss"),
            'ς' => folded.push('σ'),
            c => folded.push(c),
        }
    }
    folded.nfkc().collect()
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
    fn nfkc_and_case_folding_variants_are_one_name() {
        let karl = Username::parse("karl").expect("valid");
        assert_eq!(Username::parse("\u{212A}arl").expect("Kelvin sign"), karl);
        assert_eq!(Username::parse("\u{1D424}arl").expect("math bold"), karl);
        assert_eq!(Username::parse("\u{FF2B}ARL").expect("fullwidth"), karl);
        assert_eq!(
            Username::parse("\u{FB01}sh").expect("ligature"),
            Username::parse("fish").expect("valid")
        );
        assert_eq!(
            Username::parse("STRASSE").expect("valid"),
            Username::parse("stra\u{DF}e").expect("sharp s")
        );
        assert_eq!(
            Username::parse("\u{3A3}\u{3A3}").expect("valid"),
            Username::parse("\u{3C3}\u{3C2}").expect("final sigma")
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
