//! The session cookie: its name and attributes, reading it from requests, and the CSRF token
//! bound to it.
use crate::config::{Config, origin_of};
use axum::http::{HeaderMap, HeaderValue, header};
use latchkey_core::Secret;

/// The CSRF token of a cookie session is derived from its secret (HMAC), so `GET /v1/session`
/// can hand it out again while the store keeps only its hash.
const CSRF_LABEL: &[u8] = b"latchkey/v1/csrf";

pub fn csrf_token_for(cookie_secret: &Secret) -> Secret {
    cookie_secret.derive(CSRF_LABEL)
}

/// The session cookie was malformed or duplicated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session cookie is malformed or duplicated")]
pub struct BadCookie;

#[derive(Debug, Clone)]
pub struct CookieSettings {
    pub name: &'static str,
    pub secure: bool,
    pub max_age_secs: i64,
}

impl CookieSettings {
    /// `__Host-latchkey; Secure` unless the issuer is plain http on a non-loopback host (where
    /// browsers would drop a Secure cookie); the second value is the start-up warning then.
    pub fn from_config(config: &Config) -> (Self, Option<String>) {
        let issuer = config.issuer();
        let origin = origin_of(&issuer).unwrap_or_default();
        let max_age_secs =
            i64::try_from(config.session.absolute_timeout.0.as_secs()).unwrap_or(i64::MAX);
        let plain_http = origin.starts_with("http://");
        let host = origin
            .trim_start_matches("http://")
            .trim_start_matches("https://");
        let host = if host.starts_with('[') {
            host.split(']')
                .next()
                .map(|h| format!("{h}]"))
                .unwrap_or_default()
        } else {
            host.split(':').next().unwrap_or_default().to_string()
        };
        let loopback = matches!(host.as_str(), "localhost" | "127.0.0.1" | "[::1]");
        if plain_http && !loopback {
            let warning = format!(
                "issuer {issuer} is plain http on a non-loopback host: the session cookie is named \
                 `latchkey` without the __Host- prefix and without Secure; use https in production"
            );
            (
                Self {
                    name: "latchkey",
                    secure: false,
                    max_age_secs,
                },
                Some(warning),
            )
        } else {
            (
                Self {
                    name: "__Host-latchkey",
                    secure: true,
                    max_age_secs,
                },
                None,
            )
        }
    }

    /// `Set-Cookie` for a new session.
    pub fn set(&self, secret: &Secret) -> HeaderValue {
        self.header(&secret.to_text(), self.max_age_secs)
    }

    /// `Set-Cookie` that removes the cookie.
    pub fn clear(&self) -> HeaderValue {
        self.header("", 0)
    }

    fn header(&self, value: &str, max_age: i64) -> HeaderValue {
        let secure = if self.secure { "; Secure" } else { "" };
        let text = format!(
            "{}={value}; Path=/; HttpOnly{secure}; SameSite=Lax; Max-Age={max_age}",
            self.name
        );
        HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
    }

    /// The session secret from the request's cookies: `Ok(None)` without our cookie, an error
    /// when it is malformed or sent more than once (never guess which one is real).
    pub fn read(&self, headers: &HeaderMap) -> Result<Option<Secret>, BadCookie> {
        let mut found: Option<&str> = None;
        for value in headers.get_all(header::COOKIE) {
            let Ok(value) = value.to_str() else { continue };
            for pair in value.split(';') {
                let Some((name, val)) = pair.trim().split_once('=') else {
                    continue;
                };
                if name.trim() == self.name {
                    if found.is_some() {
                        return Err(BadCookie);
                    }
                    found = Some(val.trim().trim_matches('"'));
                }
            }
        }
        match found {
            None => Ok(None),
            Some(text) => Secret::parse(text).map(Some).ok_or(BadCookie),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(issuer: &str) -> (CookieSettings, Option<String>) {
        let config = Config {
            issuer: Some(issuer.into()),
            ..Config::default()
        };
        CookieSettings::from_config(&config)
    }

    #[test]
    fn prefix_and_secure_stay_on_https_and_loopback() {
        for issuer in [
            "https://auth.example.com",
            "http://127.0.0.1:8080",
            "http://localhost:3000",
            "http://[::1]:8080",
        ] {
            let (s, warning) = settings(issuer);
            assert_eq!(
                (s.name, s.secure, warning.is_none()),
                ("__Host-latchkey", true, true),
                "{issuer}"
            );
        }
        let (s, warning) = settings("http://auth.internal:8080");
        assert_eq!((s.name, s.secure), ("latchkey", false));
        assert!(warning.is_some());
    }

    #[test]
    fn set_cookie_attributes() {
        let (s, _) = settings("http://127.0.0.1:8080");
        let secret = Secret::generate();
        let header = s.set(&secret);
        assert_eq!(
            header.to_str().expect("ascii"),
            format!(
                "__Host-latchkey={}; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=604800",
                secret.to_text()
            )
        );
        assert_eq!(
            s.clear().to_str().expect("ascii"),
            "__Host-latchkey=; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=0"
        );
    }

    #[test]
    fn reading_is_strict() {
        let (s, _) = settings("http://127.0.0.1:8080");
        let secret = Secret::generate();
        let mut h = HeaderMap::new();
        assert_eq!(s.read(&h).map(|o| o.is_some()), Ok(false));
        h.insert(
            header::COOKIE,
            format!("a=b; __Host-latchkey={}; c=d", secret.to_text())
                .parse()
                .expect("h"),
        );
        assert!(s.read(&h).expect("ok").expect("some").ct_eq(&secret));
        h.insert(
            header::COOKIE,
            format!("__Host-latchkey={0}; __Host-latchkey={0}", secret.to_text())
                .parse()
                .expect("h"),
        );
        assert!(s.read(&h).is_err(), "duplicate");
        h.insert(header::COOKIE, "__Host-latchkey=short".parse().expect("h"));
        assert!(s.read(&h).is_err(), "malformed");
        h.insert(header::COOKIE, "latchkey=whatever".parse().expect("h"));
        assert_eq!(
            s.read(&h).map(|o| o.is_some()),
            Ok(false),
            "unprefixed name is another cookie"
        );
    }
}
