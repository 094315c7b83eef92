//! [`VerifierConfig`]: where Latchkey is, what tokens must say, and how closely to follow the
//! revocation feed. Only `issuer` and `audience` have no default.

use std::{fmt, time::Duration};

use http::{HeaderValue, Uri};

use crate::error::Error;

/// Largest accepted [`VerifierConfig::leeway`].
pub const MAX_LEEWAY: Duration = Duration::from_secs(60);

/// How a [`crate::Verifier`] reaches Latchkey and what it accepts.
///
/// Build it with [`VerifierConfig::new`] and change fields as needed:
///
/// ```
/// use std::time::Duration;
/// use latchkey_verify::VerifierConfig;
///
/// let config = VerifierConfig {
///     leeway: Duration::from_secs(5),
///     ..VerifierConfig::new("https://auth.example.com", "api")
/// };
/// assert_eq!(config.jwks_url(), "https://auth.example.com/.well-known/jwks.json");
/// assert_eq!(config.feed_url(), "https://auth.example.com/v1/revocations");
/// ```
#[derive(Clone)]
pub struct VerifierConfig {
    /// Latchkey's `issuer`, compared exactly with each token's `iss`.
    pub issuer: String,
    /// This resource server's audience: a token's `aud` must be (or contain) it.
    pub audience: String,
    /// Where the JWKS is; `None`: `{issuer}/.well-known/jwks.json`.
    pub jwks_url: Option<String>,
    /// Where the revocation feed is; `None`: `{issuer}/v1/revocations`.
    pub feed_url: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`. Default 30 s, at most 60 s.
    pub leeway: Duration,
    /// A token naming an unknown `kid` makes the JWKS be read again, at most this often
    /// (whatever the number of such tokens). Default 30 s, at least 100 ms.
    pub jwks_min_refresh_interval: Duration,
    /// The JWKS is also read again this often in the background, so that retired keys stop
    /// being accepted. Default 5 min.
    pub jwks_max_age: Duration,
    /// How often the revocation feed is polled. Default 250 ms; at least 10 ms and at most
    /// `feed_max_staleness`.
    pub feed_poll_interval: Duration,
    /// Past this without a successful read of the feed, verification fails closed
    /// ([`crate::VerifyError::FeedStale`]). Default 5 s.
    pub feed_max_staleness: Duration,
    /// Accept tokens even while the feed is stale (revocations may then be missed).
    /// Default `false`.
    pub fail_open_when_feed_stale: bool,
    /// Sent as `Authorization: Bearer` to the feed, when Latchkey's `feed_token` is set.
    /// Never shown by `Debug`.
    pub feed_token: Option<String>,
    /// Limit for each request to Latchkey (connect, headers and body). Default 5 s.
    pub http_timeout: Duration,
}

impl VerifierConfig {
    /// The defaults for this issuer and audience.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        VerifierConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: None,
            feed_url: None,
            leeway: Duration::from_secs(30),
            jwks_min_refresh_interval: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(300),
            feed_poll_interval: Duration::from_millis(250),
            feed_max_staleness: Duration::from_secs(5),
            fail_open_when_feed_stale: false,
            feed_token: None,
            http_timeout: Duration::from_secs(5),
        }
    }

    /// The JWKS URL in effect.
    pub fn jwks_url(&self) -> String {
        self.jwks_url
            .clone()
            .unwrap_or_else(|| format!("{}/.well-known/jwks.json", self.issuer_base()))
    }

    /// The revocation feed URL in effect.
    pub fn feed_url(&self) -> String {
        self.feed_url
            .clone()
            .unwrap_or_else(|| format!("{}/v1/revocations", self.issuer_base()))
    }

    fn issuer_base(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }

    /// Checks every value; the error names the field.
    pub(crate) fn resolve(&self) -> Result<Resolved, Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.issuer.is_empty() {
            return bad("issuer is empty".into());
        }
        if self.audience.is_empty() {
            return bad("audience is empty".into());
        }
        if self.leeway > MAX_LEEWAY {
            return bad(format!(
                "leeway {:?} is over the maximum of {MAX_LEEWAY:?}",
                self.leeway
            ));
        }
        if self.jwks_min_refresh_interval < Duration::from_millis(100) {
            return bad("jwks_min_refresh_interval must be at least 100 ms".into());
        }
        if self.jwks_max_age < self.jwks_min_refresh_interval {
            return bad("jwks_max_age must be at least jwks_min_refresh_interval".into());
        }
        if self.feed_poll_interval < Duration::from_millis(10) {
            return bad("feed_poll_interval must be at least 10 ms".into());
        }
        if self.feed_max_staleness < self.feed_poll_interval {
            return bad("feed_max_staleness must be at least feed_poll_interval".into());
        }
        if self.http_timeout.is_zero() {
            return bad("http_timeout must not be zero".into());
        }
        let feed_auth = match &self.feed_token {
            None => None,
            Some(token) => {
                let value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .ok()
                    .filter(|_| !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic()));
                match value {
                    Some(mut value) => {
                        value.set_sensitive(true);
                        Some(value)
                    }
                    None => return bad("feed_token must be printable ASCII without spaces".into()),
                }
            }
        };
        Ok(Resolved {
            issuer: self.issuer.clone(),
            audience: self.audience.clone(),
            leeway_secs: self.leeway.as_secs(),
            jwks_uri: parse_url("jwks_url", &self.jwks_url())?,
            feed_base: {
                let url = self.feed_url();
                parse_url("feed_url", &url)?;
                url
            },
            feed_auth,
            jwks_min_refresh_interval: self.jwks_min_refresh_interval,
            jwks_max_age: self.jwks_max_age,
            feed_poll_interval: self.feed_poll_interval,
            feed_max_staleness: self.feed_max_staleness,
            fail_open_when_feed_stale: self.fail_open_when_feed_stale,
            http_timeout: self.http_timeout,
        })
    }
}

/// `http://` or (with the `rustls` feature) `https://`, with a host.
fn parse_url(field: &str, url: &str) -> Result<Uri, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|_| Error::Config(format!("{field} {url:?} is not a URL")))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(Error::Config(format!("{field} {url:?} has no host")));
    }
    match uri.scheme_str() {
        Some("http") => Ok(uri),
        Some("https") if cfg!(feature = "rustls") => Ok(uri),
        Some("https") => Err(Error::Config(format!(
            "{field} {url:?} is https: enable the `rustls` feature of latchkey-verify"
        ))),
        _ => Err(Error::Config(format!(
            "{field} {url:?} must start with http:// or https://"
        ))),
    }
}

impl fmt::Debug for VerifierConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifierConfig")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("jwks_url", &self.jwks_url())
            .field("feed_url", &self.feed_url())
            .field("leeway", &self.leeway)
            .field("jwks_min_refresh_interval", &self.jwks_min_refresh_interval)
            .field("jwks_max_age", &self.jwks_max_age)
            .field("feed_poll_interval", &self.feed_poll_interval)
            .field("feed_max_staleness", &self.feed_max_staleness)
            .field("fail_open_when_feed_stale", &self.fail_open_when_feed_stale)
            .field(
                "feed_token",
                &self.feed_token.as_ref().map(|_| "<redacted>"),
            )
            .field("http_timeout", &self.http_timeout)
            .finish()
    }
}

/// A checked configuration.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub issuer: String,
    pub audience: String,
    pub leeway_secs: u64,
    pub jwks_uri: Uri,
    /// The feed URL without the `after` parameter.
    pub feed_base: String,
    pub feed_auth: Option<HeaderValue>,
    pub jwks_min_refresh_interval: Duration,
    pub jwks_max_age: Duration,
    pub feed_poll_interval: Duration,
    pub feed_max_staleness: Duration,
    pub fail_open_when_feed_stale: bool,
    pub http_timeout: Duration,
}

impl Resolved {
    /// `GET {feed}?after=N` (or `&after=N` when the URL has a query already).
    pub fn feed_uri(&self, after: i64) -> Result<Uri, Error> {
        let sep = if self.feed_base.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}after={after}", self.feed_base)
            .parse()
            .map_err(|_| Error::Config(format!("feed_url {:?} is not a URL", self.feed_base)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(config: VerifierConfig) -> Result<Resolved, String> {
        config.resolve().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_follow_the_issuer() {
        let config = VerifierConfig::new("http://127.0.0.1:8080/", "api");
        let r = resolve(config.clone()).expect("valid");
        assert_eq!(r.jwks_uri, "http://127.0.0.1:8080/.well-known/jwks.json");
        assert_eq!(
            r.feed_uri(7).expect("uri"),
            "http://127.0.0.1:8080/v1/revocations?after=7"
        );
        assert_eq!(r.leeway_secs, 30);
        assert!(!r.fail_open_when_feed_stale);
        let custom = VerifierConfig {
            feed_url: Some("http://h/feed?x=1".into()),
            ..config
        };
        assert_eq!(
            resolve(custom).expect("valid").feed_uri(0).expect("uri"),
            "http://h/feed?x=1&after=0"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let base = || VerifierConfig::new("http://auth.test", "api");
        let cases = [
            (
                VerifierConfig {
                    leeway: Duration::from_secs(61),
                    ..base()
                },
                "leeway",
            ),
            (VerifierConfig::new("", "api"), "issuer"),
            (VerifierConfig::new("http://a", ""), "audience"),
            (VerifierConfig::new("ftp://a", "api"), "jwks_url"),
            (
                VerifierConfig {
                    feed_url: Some("not a url".into()),
                    ..base()
                },
                "feed_url",
            ),
            (
                VerifierConfig {
                    feed_poll_interval: Duration::from_secs(10),
                    ..base()
                },
                "feed_max_staleness",
            ),
            (
                VerifierConfig {
                    jwks_min_refresh_interval: Duration::ZERO,
                    ..base()
                },
                "jwks_min_refresh_interval",
            ),
            (
                VerifierConfig {
                    feed_token: Some("two words".into()),
                    ..base()
                },
                "feed_token",
            ),
            (
                VerifierConfig {
                    http_timeout: Duration::ZERO,
                    ..base()
                },
                "http_timeout",
            ),
        ];
        for (config, field) in cases {
            let err = resolve(config).expect_err(field);
            assert!(err.contains(field), "{err}");
        }
        assert!(
            resolve(VerifierConfig {
                leeway: MAX_LEEWAY,
                ..base()
            })
            .is_ok()
        );
    }

    #[test]
    fn https_needs_the_rustls_feature() {
        let r = resolve(VerifierConfig::new("https://auth.test", "api"));
        assert_eq!(r.is_ok(), cfg!(feature = "rustls"));
    }

    #[test]
    fn debug_hides_the_feed_token() {
        let config = VerifierConfig {
            feed_token: Some("s3cret-feed-token".into()),
            ..VerifierConfig::new("http://auth.test", "api")
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("<redacted>"));
        let r = config.resolve().expect("valid");
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
