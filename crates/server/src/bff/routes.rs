//! The route table: `[[bff.routes]]` validated at start, and longest-prefix matching.
//!
//! A prefix is a plain path like `/api/`: it starts and ends with `/`, uses only unreserved
//! characters, and its first segment is never one of Latchkey's own (`/v1/`, `/oauth/`, ...),
//! so a BFF route can never shadow the API, the pages or the health checks.
use crate::config::{BffConfig, ConfigError, is_scope_token};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderName, Uri};
use std::collections::HashSet;

/// First path segments that belong to Latchkey itself. Compared case-insensitively.
pub const RESERVED_SEGMENTS: &[&str] = &[
    "v1",
    "oauth",
    "admin",
    ".well-known",
    "healthz",
    "readyz",
    "metrics",
    "login",
    "account",
    "assets",
    "demo",
];

const MAX_PREFIX_LEN: usize = 256;

/// One validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `/api/`
    pub prefix: String,
    pub scheme: Scheme,
    pub authority: Authority,
    /// The upstream's base path, ending with `/` (`/` when the URL has none).
    pub base_path: String,
    pub audience: String,
    /// Space-separated, for the `scope` claim.
    pub scope: String,
    /// Routes with the same audience and scope share one cached token per session.
    pub profile: usize,
}

impl Route {
    /// The upstream URI for the part of the path after the prefix (already checked by
    /// [`super::path::check_rest`]) and the raw query.
    pub fn upstream_uri(&self, rest: &str, query: Option<&str>) -> Option<Uri> {
        let mut text = String::with_capacity(
            self.base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 64,
        );
        text.push_str(self.scheme.as_str());
        text.push_str("://");
        text.push_str(self.authority.as_str());
        text.push_str(&self.base_path);
        text.push_str(rest);
        if let Some(q) = query {
            text.push('?');
            text.push_str(q);
        }
        let uri: Uri = text.parse().ok()?;
        // Belt and braces: what we built still points at the route's upstream and under its
        // base path.
        (uri.authority() == Some(&self.authority) && uri.path().starts_with(&self.base_path))
            .then_some(uri)
    }
}

/// All routes, longest prefix first.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// `(audience, scope)` of each token profile.
    pub profiles: Vec<(String, String)>,
}

impl RouteTable {
    /// Builds the table from a configuration that [`validate`] accepted.
    pub fn new(config: &BffConfig) -> Result<Self, ConfigError> {
        validate(config)?;
        let mut profiles: Vec<(String, String)> = Vec::new();
        let mut routes = Vec::new();
        for (i, r) in config.routes.iter().enumerate() {
            let (scheme, authority, base_path) = parse_upstream(&r.upstream)
                .map_err(|m| invalid(format!("bff.routes[{i}].upstream"), m))?;
            let scope = r.scopes.join(" ");
            let key = (r.audience.clone(), scope.clone());
            let profile = match profiles.iter().position(|p| *p == key) {
                Some(p) => p,
                None => {
                    profiles.push(key);
                    profiles.len() - 1
                }
            };
            routes.push(Route {
                prefix: r.prefix.clone(),
                scheme,
                authority,
                base_path,
                audience: r.audience.clone(),
                scope,
                profile,
            });
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Ok(Self { routes, profiles })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route whose prefix the raw path starts with (longest wins), and the rest of the
    /// path after the prefix.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Route, &'p str)> {
        self.routes
            .iter()
            .find_map(|r| path.strip_prefix(r.prefix.as_str()).map(|rest| (r, rest)))
    }

    /// Whether any upstream is `https://` (then the TLS roots are loaded).
    pub fn needs_tls(&self) -> bool {
        self.routes.iter().any(|r| r.scheme == Scheme::HTTPS)
    }
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Checks `[bff]` at start; every message names the key.
pub fn validate(config: &BffConfig) -> Result<(), ConfigError> {
    for (key, ttl) in [
        ("bff.connect_timeout", config.connect_timeout),
        ("bff.timeout", config.timeout),
        ("bff.request_idle_timeout", config.request_idle_timeout),
        ("bff.response_idle_timeout", config.response_idle_timeout),
    ] {
        if ttl.0.is_zero() {
            return Err(invalid(key, "must be longer than zero"));
        }
    }
    if config.max_body.0 == 0 {
        return Err(invalid("bff.max_body", "must be larger than zero"));
    }
    if config.session_cache.0 > std::time::Duration::from_secs(10) {
        return Err(invalid(
            "bff.session_cache",
            "must be at most 10s: it bounds how long a session changed outside the revocation feed stays usable",
        ));
    }
    for name in &config.strip_headers {
        if HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(
                "bff.strip_headers",
                format!("{name:?} is not a header name"),
            ));
        }
    }
    let mut prefixes = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let key = |field: &str| format!("bff.routes[{i}].{field}");
        check_prefix(&r.prefix).map_err(|m| invalid(key("prefix"), m))?;
        if !prefixes.insert(r.prefix.as_str()) {
            return Err(invalid(
                key("prefix"),
                format!("duplicate prefix {:?}", r.prefix),
            ));
        }
        parse_upstream(&r.upstream).map_err(|m| invalid(key("upstream"), m))?;
        if r.audience.is_empty()
            || r.audience.len() > 256
            || r.audience.chars().any(char::is_control)
        {
            return Err(invalid(
                key("audience"),
                "must be 1-256 characters, no control characters",
            ));
        }
        for scope in &r.scopes {
            if !is_scope_token(scope) {
                return Err(invalid(
                    key("scopes"),
                    format!("{scope:?} is not a valid scope token"),
                ));
            }
        }
    }
    Ok(())
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~' | '/')
}

fn check_prefix(prefix: &str) -> Result<(), String> {
    let shape = "must look like \"/api/\": start and end with '/', letters, digits, '-', '.', '_', '~' only";
    if prefix.len() < 3
        || prefix.len() > MAX_PREFIX_LEN
        || !prefix.starts_with('/')
        || !prefix.ends_with('/')
        || !prefix.chars().all(is_path_char)
    {
        return Err(format!("{prefix:?} {shape}"));
    }
    let segments: Vec<&str> = prefix[1..prefix.len() - 1].split('/').collect();
    if segments
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(format!(
            "{prefix:?} has an empty, '.' or '..' segment; {shape}"
        ));
    }
    let first = segments[0].to_ascii_lowercase();
    if RESERVED_SEGMENTS.contains(&first.as_str()) {
        return Err(format!(
            "{prefix:?} overlaps Latchkey's own paths (/{first}...); reserved first segments: {}",
            RESERVED_SEGMENTS.join(", ")
        ));
    }
    Ok(())
}

/// `http(s)://host[:port][/base/]` → scheme, authority, base path ending with `/`.
fn parse_upstream(text: &str) -> Result<(Scheme, Authority, String), String> {
    let shape = format!(
        "{text:?} must be an http:// or https:// URL with a host, an optional port and an optional \
         base path ending with '/' (no user info, query or fragment), e.g. \"http://127.0.0.1:9000/\""
    );
    if text.contains(['#', '?', '@', '\\']) || text.chars().any(|c| c.is_whitespace()) {
        return Err(shape);
    }
    let uri: Uri = text.parse().map_err(|_| shape.clone())?;
    let scheme = uri.scheme().cloned().ok_or_else(|| shape.clone())?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(shape);
    }
    let authority = uri.authority().cloned().ok_or_else(|| shape.clone())?;
    if authority.host().is_empty() {
        return Err(shape);
    }
    let path = uri.path();
    let path = if path.is_empty() { "/" } else { path };
    if !path.ends_with('/') || !path.chars().all(is_path_char) {
        return Err(shape);
    }
    if path[1..]
        .split('/')
        .rev()
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(shape);
    }
    Ok((scheme, authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BffRoute, Ttl};
    use std::time::Duration;

    fn config(routes: &[(&str, &str)]) -> BffConfig {
        BffConfig {
            routes: routes
                .iter()
                .map(|(prefix, upstream)| BffRoute {
                    prefix: (*prefix).into(),
                    upstream: (*upstream).into(),
                    audience: "api".into(),
                    scopes: vec![],
                })
                .collect(),
            ..BffConfig::default()
        }
    }

    #[test]
    fn prefixes_never_overlap_latchkey() {
        for bad in [
            "/",
            "//",
            "/v1/",
            "/V1/",
            "/v1/things/",
            "/oauth/",
            "/admin/",
            "/.well-known/",
            "/healthz/",
            "/readyz/",
            "/metrics/",
            "/login/",
            "/account/",
            "/assets/",
            "/demo/",
            "api/",
            "/api",
            "/a//b/",
            "/a/../",
            "/./",
            "/a%2f/",
            "/a?/",
            "/a b/",
            "/ä/",
        ] {
            let err = validate(&config(&[(bad, "http://127.0.0.1:9000/")]))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("bff.routes[0].prefix"), "{bad}: {err}");
        }
        for good in ["/api/", "/api/v2/", "/v1x/", "/my-app_1.0~x/"] {
            validate(&config(&[(good, "http://127.0.0.1:9000/")])).expect(good);
        }
        let err = validate(&config(&[
            ("/api/", "http://127.0.0.1:9000/"),
            ("/api/", "http://127.0.0.1:9001/"),
        ]))
        .expect_err("duplicate")
        .to_string();
        assert!(err.contains("bff.routes[1].prefix"), "{err}");
    }

    #[test]
    fn upstreams_are_plain_http_urls() {
        for bad in [
            "127.0.0.1:9000",
            "ftp://h/",
            "http:///x/",
            "http://u:p@h/",
            "http://h/x",
            "http://h/?q=1",
            "http://h/#f",
            "http://h/a/../",
            "http://h//",
            "http://h/a\\b/",
            "file:///etc/",
        ] {
            let err = validate(&config(&[("/api/", bad)]))
                .expect_err(bad)
                .to_string();
            assert!(err.contains("bff.routes[0].upstream"), "{bad}: {err}");
        }
        for good in [
            "http://127.0.0.1:9000/",
            "http://127.0.0.1:9000",
            "https://api.internal/v1/",
            "http://[::1]:9000/base/",
        ] {
            validate(&config(&[("/api/", good)])).expect(good);
        }
    }

    #[test]
    fn other_keys() {
        let mut c = config(&[("/api/", "http://h/")]);
        c.timeout = Ttl(Duration::ZERO);
        assert!(
            validate(&c)
                .expect_err("zero")
                .to_string()
                .contains("bff.timeout")
        );
        let mut c = config(&[("/api/", "http://h/")]);
        c.strip_headers = vec!["bad header".into()];
        assert!(
            validate(&c)
                .expect_err("header")
                .to_string()
                .contains("bff.strip_headers")
        );
        let mut c = config(&[("/api/", "http://h/")]);
        c.routes[0].audience = String::new();
        assert!(
            validate(&c)
                .expect_err("aud")
                .to_string()
                .contains("audience")
        );
        let mut c = config(&[("/api/", "http://h/")]);
        c.routes[0].scopes = vec!["a b".into()];
        assert!(
            validate(&c)
                .expect_err("scope")
                .to_string()
                .contains("scopes")
        );
    }

    /// The demo's configuration (examples/bff-demo/latchkey.toml) stays valid.
    #[test]
    fn the_demo_config_loads() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/bff-demo/latchkey.toml");
        // The file alone: the process environment belongs to the config module's tests.
        use figment::providers::{Format, Serialized, Toml};
        let config: crate::config::Config =
            figment::Figment::from(Serialized::defaults(crate::config::Config::default()))
                .merge(Toml::file_exact(&path))
                .extract()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        config.validate().expect("valid");
        let bff = &config.bff;
        assert!(bff.demo);
        assert_eq!(bff.routes[0].prefix, "/api/");
        assert_eq!(bff.routes[0].scopes, ["read", "write"]);
        let table = RouteTable::new(bff).expect("routes");
        assert_eq!(table.routes()[0].audience, "api");
    }

    #[test]
    fn longest_prefix_wins_and_uris_stay_under_the_base() {
        let table = RouteTable::new(&config(&[
            ("/api/", "http://127.0.0.1:9000/"),
            ("/api/v2/", "http://127.0.0.1:9001/two/"),
        ]))
        .expect("table");
        let (r, rest) = table.find("/api/users").expect("match");
        assert_eq!((r.prefix.as_str(), rest), ("/api/", "users"));
        assert_eq!(
            r.upstream_uri(rest, Some("x=1")).expect("uri").to_string(),
            "http://127.0.0.1:9000/users?x=1"
        );
        let (r, rest) = table.find("/api/v2/a/b").expect("match");
        assert_eq!(
            r.upstream_uri(rest, None).expect("uri").to_string(),
            "http://127.0.0.1:9001/two/a/b"
        );
        assert!(table.find("/api").is_none());
        assert!(table.find("/API/x").is_none());
        assert!(table.find("/v1/me").is_none());
        // Same audience and scope: one token profile.
        assert_eq!(table.profiles.len(), 1);
    }
}
