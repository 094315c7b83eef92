//! Roles: operator-granted names a user holds, carried in access tokens as the RFC 9068
//! `roles` claim. A role name is 1 to 64 characters of `[A-Za-z0-9_.:-]`, compared exactly.
use std::fmt;

/// Longest role name, in bytes (every allowed character is one byte).
pub const MAX_ROLE_LEN: usize = 64;
/// Most roles one user may hold.
pub const MAX_ROLES: usize = 64;

/// Why a set of role names was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleError {
    /// A name is empty, longer than [`MAX_ROLE_LEN`] or has a character outside `[A-Za-z0-9_.:-]`.
    InvalidName(String),
    /// More than [`MAX_ROLES`] distinct names.
    TooMany(usize),
}

impl fmt::Display for RoleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleError::InvalidName(name) => {
                // Never echo a long or odd input in full.
                let shown: String = name.chars().take(MAX_ROLE_LEN).collect();
                write!(
                    f,
                    "invalid role name {shown:?}: 1 to {MAX_ROLE_LEN} characters of A-Z a-z 0-9 _ . : -"
                )
            }
            RoleError::TooMany(n) => write!(f, "{n} roles: a user holds at most {MAX_ROLES}"),
        }
    }
}

impl std::error::Error for RoleError {}

/// Whether `name` is a valid role name.
pub fn is_valid_role(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ROLE_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Validates role names and returns them as a set: sorted, without duplicates.
pub fn normalize_roles<I, S>(names: I) -> Result<Vec<String>, RoleError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut roles = Vec::new();
    for name in names {
        let name = name.as_ref();
        if !is_valid_role(name) {
            return Err(RoleError::InvalidName(name.to_string()));
        }
        roles.push(name.to_string());
        // Bound the work on hostile input before sorting.
        if roles.len() > MAX_ROLES * 4 {
            return Err(RoleError::TooMany(roles.len()));
        }
    }
    roles.sort();
    roles.dedup();
    if roles.len() > MAX_ROLES {
        return Err(RoleError::TooMany(roles.len()));
    }
    Ok(roles)
}

/// Whether `new` lacks at least one role of `old` (both as returned by [`normalize_roles`] or
/// in any order): then tokens minted with `old` are stale.
pub fn removes_any(old: &[String], new: &[String]) -> bool {
    old.iter().any(|r| !new.contains(r))
}

/// The `iat_before` of the feed entry for a role removal at `at`: the first whole second after
/// `at`. Every token minted before the change has `iat <= floor(at)`, so `iat < stale_before(at)`
/// catches all of them; Latchkey mints no token with `iat` below this after the change (it
/// waits out the rest of that second), so a token minted after the change always passes.
pub fn stale_before(at: time::OffsetDateTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(at.unix_timestamp().saturating_add(1)).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_documented_alphabet() {
        assert!(is_valid_role("admin"));
        assert!(is_valid_role("billing:read"));
        assert!(is_valid_role("a.b-c_D9"));
        assert!(is_valid_role(&"x".repeat(64)));
    }

    #[test]
    fn refuses_everything_else() {
        for bad in ["", " ", "a b", "a,b", "é", "role\n", "a/b", "a*"] {
            assert!(!is_valid_role(bad), "{bad:?}");
        }
        assert!(!is_valid_role(&"x".repeat(65)));
    }

    #[test]
    fn normalizes_to_a_sorted_set() {
        assert_eq!(
            normalize_roles(["b", "a", "b"]).expect("valid"),
            vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(
            normalize_roles(Vec::<String>::new()).expect("valid"),
            Vec::<String>::new()
        );
        assert!(matches!(
            normalize_roles(["ok", "not ok"]),
            Err(RoleError::InvalidName(_))
        ));
    }

    #[test]
    fn bounds_the_count() {
        let many: Vec<String> = (0..65).map(|i| format!("r{i}")).collect();
        assert_eq!(normalize_roles(&many), Err(RoleError::TooMany(65)));
        assert!(normalize_roles(&many[..64]).is_ok());
        let huge: Vec<String> = (0..10_000).map(|i| format!("r{i}")).collect();
        assert!(matches!(normalize_roles(&huge), Err(RoleError::TooMany(_))));
    }

    #[test]
    fn stale_before_is_the_next_whole_second() {
        let at = time::OffsetDateTime::from_unix_timestamp_nanos(10_300_000_000).expect("time");
        assert_eq!(stale_before(at).unix_timestamp(), 11);
        let whole = time::OffsetDateTime::from_unix_timestamp(10).expect("time");
        assert_eq!(stale_before(whole).unix_timestamp(), 11);
    }

    #[test]
    fn detects_removals_only() {
        let old = vec!["a".to_string(), "b".to_string()];
        assert!(!removes_any(&old, &["a".into(), "b".into(), "c".into()]));
        assert!(removes_any(&old, &["a".into()]));
        assert!(!removes_any(&[], &["a".into()]));
    }
}
