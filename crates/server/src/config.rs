//! Configuration: TOML file + `LATCHKEY_*` environment overrides, validated at start.
//!
//! Every key and default is listed in docs/configuration.md. Errors name the key (and the
//! file or variable that set it); environment variables that name no key are warnings.
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use latchkey_tokens::Algorithm;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_FILE: &str = "latchkey.toml";
pub const ENV_PREFIX: &str = "LATCHKEY_";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: SocketAddr,
    /// Absent: `http://<listen>`.
    pub issuer: Option<String>,
    pub database: String,
    pub redis: Option<String>,
    pub redis_prefix: String,
    /// For a `rediss://` Redis: a PEM file of the CA certificate(s) to trust instead of the
    /// system's.
    pub redis_tls_ca: Option<PathBuf>,
    pub admin_token: Option<Redacted>,
    pub feed_token: Option<Redacted>,
    /// When set, `GET /metrics` needs `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<Redacted>,
    pub signup: bool,
    /// Absent: the issuer's origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Peers (CIDR ranges) whose `X-Forwarded-For` / `Forwarded` headers are believed.
    pub trusted_proxies: Vec<String>,
    /// Connection timeouts and caps.
    pub server: ServerConfig,
    pub access_token: AccessTokenConfig,
    pub id_token: IdTokenConfig,
    pub refresh: RefreshConfig,
    pub session: SessionConfig,
    pub password: PasswordConfig,
    pub rate_limit: RateLimitConfig,
    pub keys: KeysConfig,
    pub clients: Vec<ClientConfig>,
    pub bff: BffConfig,
    pub log: LogConfig,
    /// On SIGTERM/SIGINT, in-flight requests get this long to finish.
    pub shutdown_grace: Ttl,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: None,
            database: "sqlite://latchkey.db".into(),
            redis: None,
            redis_prefix: "latchkey:".into(),
            redis_tls_ca: None,
            admin_token: None,
            feed_token: None,
            metrics_token: None,
            signup: true,
            allowed_origins: None,
            trusted_proxies: Vec::new(),
            server: ServerConfig::default(),
            access_token: AccessTokenConfig::default(),
            id_token: IdTokenConfig::default(),
            refresh: RefreshConfig::default(),
            session: SessionConfig::default(),
            password: PasswordConfig::default(),
            rate_limit: RateLimitConfig::default(),
            keys: KeysConfig::default(),
            clients: Vec::new(),
            bff: BffConfig::default(),
            log: LogConfig::default(),
            shutdown_grace: Ttl(Duration::from_secs(10)),
        }
    }
}

/// Connection handling: how long a client may take, and how many connections it may hold.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// A request's header block must arrive within this long of its first byte (and a new
    /// connection must send its first request's headers within this long); else the
    /// connection is closed.
    pub header_read_timeout: Ttl,
    /// A keep-alive connection with no request in progress is closed after this long.
    pub keep_alive_idle: Ttl,
    /// A request body must be read in full within this long of its headers; else 408. Not
    /// applied to the BFF proxy's routes (which stream).
    pub body_read_timeout: Ttl,
    /// Open connections over all clients; one more is closed at once.
    pub max_connections: usize,
    /// Open connections per client address (per /64 for IPv6); `0` = no cap. Peers in
    /// `trusted_proxies` are exempt (they carry many clients).
    pub max_connections_per_ip: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Ttl(Duration::from_secs(10)),
            keep_alive_idle: Ttl(Duration::from_secs(75)),
            body_read_timeout: Ttl(Duration::from_secs(30)),
            max_connections: 10_000,
            max_connections_per_ip: 128,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessTokenConfig {
    pub ttl: Ttl,
    pub algorithm: Algorithm,
}

impl Default for AccessTokenConfig {
    fn default() -> Self {
        Self {
            ttl: Ttl::mins(15),
            algorithm: Algorithm::EdDSA,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RefreshConfig {
    pub ttl: Ttl,
    pub reuse_interval: Ttl,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        Self {
            ttl: Ttl::days(7),
            reuse_interval: Ttl(Duration::ZERO),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    pub idle_timeout: Ttl,
    pub absolute_timeout: Ttl,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Ttl::hours(24),
            absolute_timeout: Ttl::days(7),
        }
    }
}

/// Password policy and Argon2id cost (OWASP minimums by default).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PasswordConfig {
    pub min_length: usize,
    pub max_length: usize,
    pub argon2_memory_kib: u32,
    pub argon2_iterations: u32,
    pub argon2_parallelism: u32,
}

impl Default for PasswordConfig {
    fn default() -> Self {
        Self {
            min_length: 8,
            max_length: 4096,
            argon2_memory_kib: 19 * 1024,
            argon2_iterations: 2,
            argon2_parallelism: 1,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    pub login_per_account: Rate,
    pub login_per_ip: Rate,
    pub token_per_ip: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            login_per_account: Rate::per_minute(10),
            login_per_ip: Rate::per_minute(30),
            token_per_ip: Rate::per_minute(120),
        }
    }
}

/// Signing-key rotation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Rotate automatically this long after the newest key was created; `0s` = only on demand.
    pub rotate_every: Ttl,
    /// A new key is published this long before it signs anything.
    pub publish_delay: Ttl,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            rotate_every: Ttl::days(30),
            publish_delay: Ttl::mins(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    Public,
    Confidential,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    pub kind: ClientKind,
    #[serde(default)]
    pub secret: Option<Redacted>,
    /// Shown on the consent page and in the sessions list; the id when absent.
    #[serde(default)]
    pub name: Option<String>,
    pub audience: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The grants this client may use at `/oauth/token` (and `authorization_code` at
    /// `/oauth/authorize`); others are `unauthorized_client`. The password grant only when
    /// listed (RFC 9700 / OAuth 2.1 deprecate it).
    #[serde(default = "default_grant_types")]
    pub grant_types: Vec<String>,
    /// Where `/oauth/authorize` may send the user back: compared exactly, never by prefix.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Where `/oauth/logout` may send the user after logging out: compared exactly.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
    /// Browser origins that may call the token, revocation and userinfo endpoints as this
    /// client (CORS, exact match), and, for a public client, `POST /v1/session/token`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// First-party clients skip the consent page; others ask the user once per scope set.
    #[serde(default = "yes")]
    pub first_party: bool,
    /// Whether this client's access tokens may call Latchkey's own account endpoints
    /// (`/v1/me`, `/v1/password`, `/v1/sessions…`). Default true.
    #[serde(default = "yes")]
    pub account_api: bool,
    /// OIDC Back-Channel Logout: where Latchkey posts a logout token when a session that this
    /// client holds tokens of ends.
    #[serde(default)]
    pub backchannel_logout_uri: Option<String>,
}

impl Default for ClientConfig {
    /// A public client with no scopes and the default grants; tests and examples start here.
    fn default() -> Self {
        Self {
            id: String::new(),
            kind: ClientKind::Public,
            secret: None,
            name: None,
            audience: String::new(),
            scopes: Vec::new(),
            grant_types: default_grant_types(),
            redirect_uris: Vec::new(),
            post_logout_redirect_uris: Vec::new(),
            allowed_origins: Vec::new(),
            first_party: true,
            account_api: true,
            backchannel_logout_uri: None,
        }
    }
}

impl ClientConfig {
    /// Whether the client may use `grant` (`authorization_code`, `refresh_token`, `password`,
    /// `client_credentials`).
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant)
    }

    /// The name users see.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The grant types a client may name in `grant_types`.
pub const GRANT_TYPES: [&str; 4] = [
    "authorization_code",
    "refresh_token",
    "password",
    "client_credentials",
];

fn default_grant_types() -> Vec<String> {
    vec!["authorization_code".into(), "refresh_token".into()]
}

fn yes() -> bool {
    true
}

/// `[id_token]`: OpenID Connect ID tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdTokenConfig {
    pub ttl: Ttl,
    /// RS256 by default: OIDC Discovery requires every provider to support it.
    pub algorithm: Algorithm,
}

impl Default for IdTokenConfig {
    fn default() -> Self {
        Self {
            ttl: Ttl::mins(15),
            algorithm: Algorithm::RS256,
        }
    }
}

/// The Backend-for-Frontend proxy (docs/bff.md); validated by `crate::bff::validate`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BffConfig {
    pub routes: Vec<BffRoute>,
    /// Time allowed to open a connection to an upstream (then 504).
    pub connect_timeout: Ttl,
    /// Time allowed for an upstream's response headers, counted from the end of the request
    /// body (then 504). Response bodies stream without a time limit.
    pub timeout: Ttl,
    /// Request headers removed before forwarding, on top of the built-in list (e.g. identity
    /// headers that some upstream trusts).
    pub strip_headers: Vec<String>,
    /// Reuse a cookie session checked in the store for this long (at most 10s) instead of
    /// looking it up on every request; revocations still apply at once through this
    /// instance's revocation feed. `0s` (default): a store lookup per request.
    pub session_cache: Ttl,
    /// Serve the demo single-page app at `/demo/` (examples/bff-demo). Off by default.
    pub demo: bool,
    /// Largest request body forwarded to an upstream (then 413 `payload_too_large`).
    pub max_body: ByteSize,
    /// Longest pause allowed between two pieces of a browser's request body (then 408 and
    /// the upstream request is abandoned).
    pub request_idle_timeout: Ttl,
    /// Longest pause allowed between two pieces of an upstream's response body (then the
    /// response to the browser is cut off).
    pub response_idle_timeout: Ttl,
}

impl Default for BffConfig {
    fn default() -> Self {
        Self {
            routes: Vec::new(),
            connect_timeout: Ttl(Duration::from_secs(5)),
            timeout: Ttl(Duration::from_secs(30)),
            strip_headers: Vec::new(),
            session_cache: Ttl(Duration::ZERO),
            demo: false,
            max_body: ByteSize(10 * 1024 * 1024),
            request_idle_timeout: Ttl(Duration::from_secs(30)),
            response_idle_timeout: Ttl(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BffRoute {
    pub prefix: String,
    pub upstream: String,
    pub audience: String,
    /// The `scope` claim of the tokens minted for this route (default: none).
    #[serde(default)]
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `latchkey=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// A secret config value: never printed by `Debug` or when the config is shown.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl Redacted {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

impl Serialize for Redacted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// A duration written as `15m`, `7d`, `0s`, `1h 30m` (humantime syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ttl(pub Duration);

impl Ttl {
    const fn mins(m: u64) -> Self {
        Self(Duration::from_secs(m * 60))
    }
    const fn hours(h: u64) -> Self {
        Self(Duration::from_secs(h * 3600))
    }
    const fn days(d: u64) -> Self {
        Self(Duration::from_secs(d * 86_400))
    }

    pub fn as_time(self) -> time::Duration {
        time::Duration::try_from(self.0).unwrap_or(time::Duration::MAX)
    }
}

impl Serialize for Ttl {
    /// As the docs write durations: the largest whole unit (`7d`, `15m`, `90s`, `250ms`).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&compact_duration(self.0))
    }
}

fn compact_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

impl<'de> Deserialize<'de> for Ttl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DurationText;
        impl serde::de::Visitor<'_> for DurationText {
            type Value = Ttl;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a duration in quotes such as \"7d\", \"15m\" or \"30s\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Ttl, E> {
                humantime::parse_duration(text.trim())
                    .map(Ttl)
                    .map_err(|e| {
                        E::custom(format!(
                            "{text:?} is not a duration such as \"15m\", \"7d\" or \"0s\": {e}"
                        ))
                    })
            }
        }
        d.deserialize_str(DurationText)
    }
}

/// A rate written as `10/min`, `5/s`, `1000/hour`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// `None` = unlimited.
    pub per: Option<(u32, Duration)>,
}

impl Rate {
    const fn per_minute(n: u32) -> Self {
        Self {
            per: Some((n, Duration::from_secs(60))),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.per {
            None => s.serialize_str("off"),
            Some((n, period)) => {
                let unit = match period.as_secs() {
                    1 => "s",
                    60 => "min",
                    _ => "hour",
                };
                s.serialize_str(&format!("{n}/{unit}"))
            }
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_rate(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a rate like \"10/min\", \"5/s\", \"100/hour\" or \"off\""
            ))
        })
    }
}

/// A size in bytes, written as a number of bytes or with a unit: `10MiB`, `512KiB`, `1GiB`
/// (also `KB`/`MB`/`GB`, powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
        match UNITS
            .iter()
            .find(|(_, size)| self.0 >= *size && self.0.is_multiple_of(*size))
        {
            Some((unit, size)) => s.serialize_str(&format!("{}{unit}", self.0 / size)),
            None => s.serialize_str(&self.0.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Bytes(n) => return Ok(ByteSize(n)),
            Raw::Text(text) => text,
        };
        parse_byte_size(&text).map(ByteSize).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{text:?} is not a size like \"10MiB\", \"512KiB\" or a number of bytes"
            ))
        })
    }
}

fn parse_byte_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(multiplier)
}

fn parse_rate(text: &str) -> Option<Rate> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("off") {
        return Some(Rate { per: None });
    }
    let (n, unit) = text.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let period = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        _ => return None,
    };
    Some(Rate {
        per: Some((n, period)),
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", describe_figment_error(.0))]
    Parse(Box<figment::Error>),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
}

/// One line per problem, naming the key and where its value came from.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            let key = key_path(&e.path);
            let source = match &e.metadata {
                Some(m) if m.name.contains("environment") => {
                    format!(
                        " (from environment variable {ENV_PREFIX}{})",
                        key.to_ascii_uppercase().replace('.', "__")
                    )
                }
                Some(m) => match &m.source {
                    Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
                    _ => String::new(),
                },
                None => String::new(),
            };
            let what = match &e.kind {
                figment::error::Kind::UnknownField(field, expected) => {
                    let hint = closest(field, expected)
                        .map(|k| format!("; did you mean `{k}`?"))
                        .unwrap_or_else(|| format!("; known keys here: {}", expected.join(", ")));
                    format!("unknown key `{field}`{hint}")
                }
                kind => kind.to_string(),
            };
            if key.is_empty() {
                format!("configuration{source}: {what}")
            } else {
                format!("configuration key `{key}`{source}: {what}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `clients[0].secret`: the style validation errors use too.
fn key_path(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.chars().all(|c| c.is_ascii_digit()) && !part.is_empty() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&part.to_ascii_lowercase());
        }
    }
    key
}

/// The known key nearest to a misspelt one (at most a third of its letters off).
fn closest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, k)| *d <= k.len().max(typed.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (prev + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            prev = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Every key a file or variable may set; tables also accept inline TOML as a whole.
const KNOWN_KEYS: &[&str] = &[
    "listen",
    "issuer",
    "database",
    "redis",
    "redis_prefix",
    "redis_tls_ca",
    "admin_token",
    "feed_token",
    "metrics_token",
    "signup",
    "allowed_origins",
    "trusted_proxies",
    "server",
    "server.header_read_timeout",
    "server.keep_alive_idle",
    "server.body_read_timeout",
    "server.max_connections",
    "server.max_connections_per_ip",
    "clients",
    "bff",
    "bff.routes",
    "bff.connect_timeout",
    "bff.timeout",
    "bff.strip_headers",
    "bff.session_cache",
    "bff.demo",
    "bff.max_body",
    "bff.request_idle_timeout",
    "bff.response_idle_timeout",
    "access_token",
    "access_token.ttl",
    "access_token.algorithm",
    "id_token",
    "id_token.ttl",
    "id_token.algorithm",
    "refresh",
    "refresh.ttl",
    "refresh.reuse_interval",
    "session",
    "session.idle_timeout",
    "session.absolute_timeout",
    "password",
    "password.min_length",
    "password.max_length",
    "password.argon2_memory_kib",
    "password.argon2_iterations",
    "password.argon2_parallelism",
    "keys",
    "keys.rotate_every",
    "keys.publish_delay",
    "rate_limit",
    "rate_limit.login_per_account",
    "rate_limit.login_per_ip",
    "rate_limit.token_per_ip",
    "log",
    "log.format",
    "log.level",
    "shutdown_grace",
];

/// Maps `LATCHKEY_REFRESH__REUSE_INTERVAL` to `refresh.reuse_interval`.
fn env_key(var: &str) -> Option<String> {
    var.strip_prefix(ENV_PREFIX)
        .map(|rest| rest.to_ascii_lowercase().replace("__", "."))
}

/// A loaded, validated configuration plus the warnings met while loading it.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
    pub figment: Figment,
}

impl Config {
    /// Loads `path` (or `latchkey.toml` if present), then `LATCHKEY_*` variables from `env`.
    /// `path` given but missing is an error; the default file missing is not.
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        Self::load_with_env(path, std::env::vars())
    }

    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Loaded, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(p) if !p.exists() => return Err(ConfigError::MissingFile(p.to_path_buf())),
            Some(p) => figment = figment.merge(Toml::file_exact(p)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_FILE))
            }
            None => {}
        }
        let known: HashSet<&str> = KNOWN_KEYS.iter().copied().collect();
        let mut warnings = Vec::new();
        for (var, _) in env {
            if let Some(key) = env_key(&var)
                && !known.contains(key.as_str())
            {
                warnings.push(format!(
                    "environment variable {var} names no configuration key; ignored"
                ));
            }
        }
        // Figment nests on '.', so `REFRESH__REUSE_INTERVAL` becomes `refresh.reuse_interval`.
        let env_provider = Env::prefixed(ENV_PREFIX).filter_map(move |k| {
            let key = k.as_str().to_ascii_lowercase().replace("__", ".");
            known.contains(key.as_str()).then(|| key.into())
        });
        figment = figment.merge(env_provider);
        let config: Config = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(Loaded {
            config,
            warnings,
            figment,
        })
    }

    pub fn issuer(&self) -> String {
        self.issuer
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
    }

    /// `scheme://host[:port]` of the issuer.
    pub fn issuer_origin(&self) -> String {
        origin_of(&self.issuer()).unwrap_or_default()
    }

    /// The origins cookie-mode requests may come from: as configured, else the issuer's
    /// origin, plus its other loopback spellings when the issuer is on loopback (a browser at
    /// `http://localhost:8080` reaches an issuer `http://127.0.0.1:8080` too).
    pub fn allowed_origins(&self) -> Vec<String> {
        if let Some(configured) = &self.allowed_origins {
            return configured.clone();
        }
        let origin = self.issuer_origin();
        let mut origins = vec![origin.clone()];
        if let Some((scheme, authority)) = origin.split_once("://") {
            let port = authority
                .rsplit_once(':')
                .filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit()))
                .map(|(_, p)| format!(":{p}"))
                .unwrap_or_default();
            let host = authority.strip_suffix(&port).unwrap_or(authority);
            if LOOPBACK_HOSTS.contains(&host) {
                for alias in LOOPBACK_HOSTS.iter().filter(|h| **h != host) {
                    origins.push(format!("{scheme}://{alias}{port}"));
                }
            }
        }
        origins
    }

    /// Settings that start but probably do not do what was meant: logged at start (and by
    /// `config check`), so a silent failure later (a browser login refused) has a cause to
    /// point at.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let issuer_origin = self.issuer_origin();
        if let Some(configured) = &self.allowed_origins
            && !configured.contains(&issuer_origin)
        {
            warnings.push(format!(
                "allowed_origins does not contain the issuer's origin {issuer_origin}: the login \
                 and account pages served by Latchkey itself will be refused (csrf_failed)"
            ));
        }
        let issuer_port = issuer_origin
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        let issuer_is_loopback = LOOPBACK_HOSTS
            .iter()
            .any(|h| issuer_origin.contains(&format!("://{h}")));
        if self.issuer.is_some()
            && issuer_is_loopback
            && self.listen.ip().is_loopback()
            && issuer_port.is_some_and(|p| p != self.listen.port())
        {
            warnings.push(format!(
                "issuer {issuer_origin} names another port than listen = {}: browsers that open \
                 http://{} directly will have their logins refused (their Origin is not the \
                 issuer's); set issuer to the address users reach, or leave it unset to follow listen",
                self.listen, self.listen
            ));
        }
        warnings
    }

    /// The PEM of `redis_tls_ca`, read and checked for certificates; None when not set.
    pub fn redis_tls_ca_pem(&self) -> Result<Option<Vec<u8>>, String> {
        let Some(path) = &self.redis_tls_ca else {
            return Ok(None);
        };
        let pem =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if !pem
            .windows(b"-----BEGIN CERTIFICATE-----".len())
            .any(|w| w == b"-----BEGIN CERTIFICATE-----")
        {
            return Err(format!(
                "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            ));
        }
        Ok(Some(pem))
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.issuer.is_none() && self.listen.ip().is_unspecified() {
            return Err(invalid(
                "issuer",
                format!(
                    "listen = {} accepts connections on every address, so the issuer (the `iss` of \
                     tokens and the origin browsers must use) cannot be derived from it; set issuer \
                     to the URL users reach, e.g. issuer = \"https://login.example.com\" or \
                     LATCHKEY_ISSUER=http://127.0.0.1:{}",
                    self.listen,
                    self.listen.port()
                ),
            ));
        }
        let issuer = self.issuer();
        if origin_of(&issuer).is_none() || issuer.ends_with('/') || issuer.contains(['?', '#']) {
            return Err(invalid(
                "issuer",
                format!(
                    "{issuer:?} must be an http:// or https:// URL without a trailing slash, query or fragment"
                ),
            ));
        }
        let db = self.database.as_str();
        if !["sqlite:", "memory:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| db.starts_with(p))
        {
            return Err(invalid(
                "database",
                "must be sqlite://PATH, postgres://USER@HOST/DB or memory:",
            ));
        }
        if let Some(redis) = &self.redis
            && !redis.starts_with("redis://")
            && !redis.starts_with("rediss://")
        {
            return Err(invalid(
                "redis",
                "must be a redis:// URL, or rediss:// for TLS",
            ));
        }
        if self.redis_tls_ca.is_some() {
            if !self
                .redis
                .as_deref()
                .is_some_and(|r| r.starts_with("rediss://"))
            {
                return Err(invalid(
                    "redis_tls_ca",
                    "is only used with a rediss:// Redis URL in `redis`",
                ));
            }
            self.redis_tls_ca_pem()
                .map_err(|m| invalid("redis_tls_ca", m))?;
        }
        if self.redis_prefix.is_empty() || self.redis_prefix.len() > 64 {
            return Err(invalid("redis_prefix", "must be 1-64 characters"));
        }
        for (key, ttl) in [
            ("access_token.ttl", self.access_token.ttl),
            ("refresh.ttl", self.refresh.ttl),
            ("session.idle_timeout", self.session.idle_timeout),
            ("session.absolute_timeout", self.session.absolute_timeout),
        ] {
            if ttl.0.is_zero() {
                return Err(invalid(key, "must be longer than zero"));
            }
        }
        if !self.access_token.algorithm.signs_access_tokens() {
            return Err(invalid(
                "access_token.algorithm",
                format!(
                    "{} keys sign ID tokens only; access tokens use \"EdDSA\" or \"ES256\"",
                    self.access_token.algorithm
                ),
            ));
        }
        if self.refresh.reuse_interval.0 >= self.refresh.ttl.0 {
            return Err(invalid(
                "refresh.reuse_interval",
                "must be shorter than refresh.ttl",
            ));
        }
        if self.refresh.reuse_interval.0 > Duration::from_secs(300) {
            return Err(invalid(
                "refresh.reuse_interval",
                "must be at most 5m: a long grace window weakens reuse detection",
            ));
        }
        if let Some(t) = &self.admin_token
            && t.expose().len() < 16
        {
            return Err(invalid("admin_token", "must be at least 16 characters"));
        }
        if let Some(t) = &self.metrics_token
            && t.expose().len() < 16
        {
            return Err(invalid("metrics_token", "must be at least 16 characters"));
        }
        for (i, entry) in self.trusted_proxies.iter().enumerate() {
            if let Err(message) = crate::net::parse_cidr(entry) {
                return Err(invalid(format!("trusted_proxies[{i}]"), message));
            }
        }
        self.server.validate()?;
        let p = &self.password;
        if p.min_length == 0 || p.min_length > p.max_length || p.max_length < 1024 {
            return Err(invalid(
                "password",
                "need 0 < min_length <= max_length, and max_length >= 1024",
            ));
        }
        if argon2::Params::new(
            p.argon2_memory_kib,
            p.argon2_iterations,
            p.argon2_parallelism,
            None,
        )
        .is_err()
        {
            return Err(invalid(
                "password.argon2_memory_kib",
                "Argon2 parameters out of range",
            ));
        }
        for origin in self.allowed_origins() {
            if origin_of(&origin).as_deref() != Some(origin.as_str()) {
                return Err(invalid(
                    "allowed_origins",
                    format!(
                        "{origin:?} is not an origin like \"https://app.example.com\" (scheme, host, optional port; no path)"
                    ),
                ));
            }
        }
        let mut ids = HashSet::new();
        for (i, c) in self.clients.iter().enumerate() {
            let key = |field: &str| format!("clients[{i}].{field}");
            if c.id.is_empty() || c.id.len() > 128 || !c.id.chars().all(|ch| ch.is_ascii_graphic())
            {
                return Err(invalid(key("id"), "must be 1-128 visible ASCII characters"));
            }
            if c.id == crate::bff::BFF_CLIENT_ID {
                return Err(invalid(
                    key("id"),
                    format!("{:?} is reserved for the tokens the BFF mints", c.id),
                ));
            }
            if !ids.insert(c.id.as_str()) {
                return Err(invalid(
                    key("id"),
                    format!("duplicate client id {:?}", c.id),
                ));
            }
            match (c.kind, &c.secret) {
                (ClientKind::Confidential, None) => {
                    return Err(invalid(
                        key("secret"),
                        "a confidential client needs a secret",
                    ));
                }
                (ClientKind::Confidential, Some(s)) if s.expose().len() < 16 => {
                    return Err(invalid(key("secret"), "must be at least 16 characters"));
                }
                (ClientKind::Public, Some(_)) => {
                    return Err(invalid(
                        key("secret"),
                        "a public client has no secret; use kind = \"confidential\"",
                    ));
                }
                _ => {}
            }
            if c.audience.is_empty() {
                return Err(invalid(key("audience"), "must not be empty"));
            }
            for grant in &c.grant_types {
                if !GRANT_TYPES.contains(&grant.as_str()) {
                    return Err(invalid(
                        key("grant_types"),
                        format!("{grant:?} is not one of {}", GRANT_TYPES.join(", ")),
                    ));
                }
            }
            if c.allows_grant("client_credentials") && c.kind != ClientKind::Confidential {
                return Err(invalid(
                    key("grant_types"),
                    "client_credentials needs a confidential client (one with a secret)",
                ));
            }
            if let Some(name) = &c.name
                && (name.trim().is_empty()
                    || name.chars().count() > 100
                    || name.chars().any(char::is_control))
            {
                return Err(invalid(key("name"), "must be 1-100 printable characters"));
            }
            for (field, uris) in [
                ("redirect_uris", &c.redirect_uris),
                ("post_logout_redirect_uris", &c.post_logout_redirect_uris),
            ] {
                for uri in uris {
                    check_redirect_uri(uri)
                        .map_err(|why| invalid(key(field), format!("{uri:?}: {why}")))?;
                }
            }
            if let Some(uri) = &c.backchannel_logout_uri {
                check_redirect_uri(uri)
                    .and_then(|()| {
                        if uri.starts_with("http://") || uri.starts_with("https://") {
                            Ok(())
                        } else {
                            Err("must be an http(s) URL")
                        }
                    })
                    .map_err(|why| {
                        invalid(key("backchannel_logout_uri"), format!("{uri:?}: {why}"))
                    })?;
            }
            for origin in &c.allowed_origins {
                if origin_of(origin).as_deref() != Some(origin.as_str()) {
                    return Err(invalid(
                        key("allowed_origins"),
                        format!(
                            "{origin:?} is not an origin like \"https://app.example.com\" (scheme, host, optional port; no path, no wildcard)"
                        ),
                    ));
                }
            }
            for scope in &c.scopes {
                if !is_scope_token(scope) {
                    return Err(invalid(
                        key("scopes"),
                        format!("{scope:?} is not a valid scope token"),
                    ));
                }
            }
        }
        crate::bff::validate(&self.bff)?;
        Ok(())
    }
}

impl ServerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (key, ttl, max) in [
            ("server.header_read_timeout", self.header_read_timeout, 300),
            ("server.keep_alive_idle", self.keep_alive_idle, 3600),
            ("server.body_read_timeout", self.body_read_timeout, 3600),
        ] {
            if ttl.0.is_zero() || ttl.0 > Duration::from_secs(max) {
                return Err(invalid(
                    key,
                    format!("must be longer than zero and at most {max}s"),
                ));
            }
        }
        if self.max_connections == 0 || self.max_connections > 1_000_000 {
            return Err(invalid(
                "server.max_connections",
                "must be between 1 and 1000000",
            ));
        }
        if self.max_connections_per_ip > self.max_connections {
            return Err(invalid(
                "server.max_connections_per_ip",
                "must be at most server.max_connections (0 = no per-address cap)",
            ));
        }
        Ok(())
    }
}

/// The effective configuration as indented JSON, secrets shown as `<redacted>`.
pub fn to_pretty_json(config: &Config) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(config)
}

/// RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\`.
pub fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// `scheme://host[:port]` of an http(s) URL, or None.
/// A registered redirect URI (RFC 9700 §2.1, OAuth 2.1 §2.3.1): absolute, no fragment; plain
/// `http` only on loopback (native apps); a private-use scheme (`com.example.app:/cb`) for
/// native apps must contain a dot (RFC 8252 §7.1).
pub fn check_redirect_uri(uri: &str) -> Result<(), &'static str> {
    if uri.len() > 2000 || uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must be at most 2000 characters without spaces");
    }
    if uri.contains('#') {
        return Err("must not have a fragment");
    }
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err("must be an absolute URI");
    };
    match scheme {
        "https" => origin_of(uri).map(|_| ()).ok_or("is not a valid https URL"),
        "http" => match origin_of(uri) {
            Some(origin)
                if LOOPBACK_HOSTS.iter().any(|h| {
                    origin == format!("http://{h}") || origin.starts_with(&format!("http://{h}:"))
                }) =>
            {
                Ok(())
            }
            _ => Err("plain http is allowed only on loopback (127.0.0.1, localhost, [::1])"),
        },
        _ if scheme.contains('.')
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
            && !rest.is_empty() =>
        {
            Ok(())
        }
        _ => Err(
            "must be https, http on loopback, or a private-use scheme like com.example.app:/callback",
        ),
    }
}

/// Host spellings that all mean this machine.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // Host (name, IPv4 or [IPv6]) and optional port only: no userinfo, no wildcard.
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-:[]".contains(c);
    if authority.is_empty() || !authority.chars().all(allowed) {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str, env: &[(&str, &str)]) -> Result<Loaded, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("latchkey.toml");
        std::fs::write(&path, toml).expect("write");
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        let result = {
            let _guard = EnvGuard::set(&env);
            Config::load_with_env(Some(&path), env.clone())
        };
        drop(dir);
        result
    }

    /// Sets process variables for the duration of one load (tests in this module run serially
    /// through a mutex).
    struct EnvGuard {
        vars: Vec<String>,
        _lock: std::sync::MutexGuard<'static, ()>,
    }
    static ENV_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    impl EnvGuard {
        fn set(vars: &[(String, String)]) -> Self {
            let lock = ENV_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            for (k, v) in vars {
                // SAFETY: serialised by ENV_LOCK; no other test thread reads these variables.
                unsafe { std::env::set_var(k, v) };
            }
            Self {
                vars: vars.iter().map(|(k, _)| k.clone()).collect(),
                _lock: lock,
            }
        }
    }
    impl Drop for EnvGuard {
        fn drop(&mut self) {
            for k in &self.vars {
                // SAFETY: as above.
                unsafe { std::env::remove_var(k) };
            }
        }
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = load("", &[]).expect("loads").config;
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.issuer(), "http://127.0.0.1:8080");
        assert_eq!(c.database, "sqlite://latchkey.db");
        assert_eq!(c.access_token.ttl.0, Duration::from_secs(900));
        assert_eq!(c.access_token.algorithm, Algorithm::EdDSA);
        assert_eq!(c.refresh.ttl.0, Duration::from_secs(7 * 86_400));
        assert_eq!(c.refresh.reuse_interval.0, Duration::ZERO);
        assert_eq!(c.session.idle_timeout.0, Duration::from_secs(86_400));
        assert_eq!(c.rate_limit.login_per_account, Rate::per_minute(10));
        assert!(c.signup);
        assert_eq!(
            c.allowed_origins(),
            vec![
                "http://127.0.0.1:8080",
                "http://localhost:8080",
                "http://[::1]:8080"
            ]
        );
        assert_eq!(c.password.argon2_memory_kib, 19_456);
        assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    }

    #[test]
    fn client_grants_redirects_and_id_tokens() {
        let c = load(
            "[[clients]]\nid = \"spa\"\nkind = \"public\"\naudience = \"api\"",
            &[],
        )
        .expect("loads")
        .config;
        let spa = &c.clients[0];
        assert_eq!(spa.grant_types, vec!["authorization_code", "refresh_token"]);
        assert!(
            !spa.allows_grant("password"),
            "the password grant only when listed"
        );
        assert!(spa.first_party && spa.account_api);
        assert_eq!(spa.display_name(), "spa");
        assert_eq!(c.id_token.algorithm, Algorithm::RS256);
        assert_eq!(c.id_token.ttl.0, Duration::from_secs(900));

        let client = |extra: &str| {
            format!("[[clients]]\nid = \"c\"\nkind = \"public\"\naudience = \"api\"\n{extra}")
        };
        for ok in [
            "redirect_uris = [\"https://app.example.com/callback\", \"http://127.0.0.1:5173/cb\", \"http://localhost/cb\", \"com.example.app:/oauth\"]",
            "post_logout_redirect_uris = [\"https://app.example.com/\"]",
            "grant_types = [\"password\"]",
            "backchannel_logout_uri = \"https://app.example.com/bcl\"",
            "name = \"Example app\"\nfirst_party = false",
        ] {
            load(&client(ok), &[]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, key) in [
            (
                "redirect_uris = [\"http://app.example.com/cb\"]",
                "clients[0].redirect_uris",
            ),
            (
                "redirect_uris = [\"https://app.example.com/cb#x\"]",
                "clients[0].redirect_uris",
            ),
            (
                "redirect_uris = [\"/callback\"]",
                "clients[0].redirect_uris",
            ),
            (
                "redirect_uris = [\"myapp:/cb\"]",
                "clients[0].redirect_uris",
            ),
            (
                "post_logout_redirect_uris = [\"javascript:alert(1)\"]",
                "clients[0].post_logout_redirect_uris",
            ),
            ("grant_types = [\"implicit\"]", "clients[0].grant_types"),
            (
                "grant_types = [\"client_credentials\"]",
                "clients[0].grant_types",
            ),
            (
                "backchannel_logout_uri = \"com.example.app:/x\"",
                "clients[0].backchannel_logout_uri",
            ),
            ("name = \" \"", "clients[0].name"),
        ] {
            let err = load(&client(bad), &[]).expect_err(bad).to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
        let err = load("[id_token]\nalgorithm = \"HS256\"", &[])
            .expect_err("HS256 ID tokens")
            .to_string();
        assert!(err.contains("algorithm"), "{err}");
    }

    #[test]
    fn config_errors_suggest_explain_and_use_one_path_style() {
        let err = load("listn = \"127.0.0.1:9000\"", &[])
            .expect_err("typo")
            .to_string();
        assert!(
            err.contains("unknown key `listn`; did you mean `listen`?"),
            "{err}"
        );
        assert!(!err.contains("``"), "no nested backticks: {err}");
        let err = load("[refresh]\nttl = 7", &[])
            .expect_err("number")
            .to_string();
        assert!(
            err.contains("refresh.ttl") && err.contains("\"7d\""),
            "{err}"
        );
        let err = load(
            "[[clients]]\nid = \"c\"\nkind = \"public\"\naudiance = \"api\"",
            &[],
        )
        .expect_err("typo in a client")
        .to_string();
        assert!(err.contains("clients[0]"), "{err}");
        assert!(err.contains("did you mean `audience`?"), "{err}");
        let err = load("", &[("LATCHKEY_REFRESH__TTL", "soon")])
            .expect_err("env")
            .to_string();
        assert!(
            err.contains("LATCHKEY_REFRESH__TTL"),
            "the source is named: {err}"
        );
        // Durations print as the docs write them.
        assert_eq!(compact_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(compact_duration(Duration::from_secs(900)), "15m");
        assert_eq!(compact_duration(Duration::from_secs(90)), "90s");
        assert_eq!(compact_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(compact_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn issuer_and_listen_cannot_silently_disagree() {
        // 0.0.0.0 without an issuer: refused, naming the key and the fix.
        let err = load("listen = \"0.0.0.0:8080\"", &[])
            .expect_err("unspecified listen without issuer")
            .to_string();
        assert!(
            err.contains("issuer") && err.contains("0.0.0.0:8080"),
            "{err}"
        );
        let ok = load(
            "listen = \"0.0.0.0:8080\"\nissuer = \"https://login.example.com\"",
            &[],
        )
        .expect("an explicit issuer makes 0.0.0.0 fine");
        assert!(ok.config.warnings().is_empty());
        // The issuer pinned to one port, the server moved to another: a warning names both.
        let moved = load(
            "issuer = \"http://127.0.0.1:8080\"",
            &[("LATCHKEY_LISTEN", "127.0.0.1:19010")],
        )
        .expect("loads");
        let warnings = moved.config.warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("127.0.0.1:19010"), "{warnings:?}");
        // Origins that leave out the issuer's own: the built-in pages cannot log in.
        let origins = load("allowed_origins = [\"https://app.example.com\"]", &[]).expect("loads");
        assert!(origins.config.warnings()[0].contains("issuer's origin"));
        // A non-loopback issuer gets no loopback aliases.
        let public = load("issuer = \"https://login.example.com\"", &[]).expect("loads");
        assert_eq!(
            public.config.allowed_origins(),
            vec!["https://login.example.com"]
        );
    }

    #[test]
    fn file_values_and_env_overrides() {
        let loaded = load(
            r#"
            issuer = "https://auth.example.com"
            [refresh]
            reuse_interval = "10s"
            [[clients]]
            id = "spa"
            kind = "public"
            audience = "api"
            scopes = ["read", "write"]
            "#,
            &[
                ("LATCHKEY_REFRESH__REUSE_INTERVAL", "30s"),
                (
                    "LATCHKEY_ALLOWED_ORIGINS",
                    r#"["http://a.example", "http://b.example"]"#,
                ),
                ("LATCHKEY_SIGNUP", "false"),
                ("LATCHKEY_NO_SUCH_KEY", "1"),
            ],
        )
        .expect("loads");
        let c = loaded.config;
        assert_eq!(c.refresh.reuse_interval.0, Duration::from_secs(30));
        assert_eq!(
            c.allowed_origins(),
            vec!["http://a.example", "http://b.example"]
        );
        assert!(!c.signup);
        assert_eq!(c.clients[0].scopes, vec!["read", "write"]);
        assert_eq!(loaded.warnings.len(), 1);
        assert!(
            loaded.warnings[0].contains("LATCHKEY_NO_SUCH_KEY"),
            "{:?}",
            loaded.warnings
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let err = load("listen = \"127.0.0.1:1\"\nlisten_port = 9", &[])
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("listen_port"), "{err}");
        let err = load("[refresh]\nttl = \"seven days\"", &[])
            .expect_err("bad duration")
            .to_string();
        assert!(err.contains("ttl"), "{err}");
        let err = load("[rate_limit]\nlogin_per_ip = \"lots\"", &[])
            .expect_err("bad rate")
            .to_string();
        assert!(err.contains("login_per_ip"), "{err}");
        let err = load("[access_token]\nalgorithm = \"HS256\"", &[])
            .expect_err("bad alg")
            .to_string();
        assert!(err.contains("algorithm"), "{err}");
        let err = load("[access_token]\nalgorithm = \"RS256\"", &[])
            .expect_err("RS256 access tokens")
            .to_string();
        assert!(
            err.contains("access_token.algorithm") && err.contains("ID tokens"),
            "{err}"
        );
        let err = load("", &[("LATCHKEY_ACCESS_TOKEN__TTL", "soon")])
            .expect_err("bad env")
            .to_string();
        assert!(
            err.contains("ttl") && err.contains("LATCHKEY_ACCESS_TOKEN__TTL"),
            "{err}"
        );
        let err = load("issuer = \"ftp://x\"", &[])
            .expect_err("bad issuer")
            .to_string();
        assert!(err.contains("issuer"), "{err}");
        let err = load(
            "[[clients]]\nid = \"c\"\nkind = \"confidential\"\naudience = \"api\"",
            &[],
        )
        .expect_err("no secret")
        .to_string();
        assert!(err.contains("clients[0].secret"), "{err}");
    }

    #[test]
    fn secrets_never_show_in_debug_or_serialised_config() {
        let c = load(
            "admin_token = \"super-secret-admin-token\"\n[[clients]]\nid = \"c\"\nkind = \"confidential\"\nsecret = \"client-secret-0123456789\"\naudience = \"api\"",
            &[],
        )
        .expect("loads")
        .config;
        let shown = format!("{c:?} {}", serde_json::to_string(&c).expect("serialises"));
        assert!(!shown.contains("super-secret-admin-token"));
        assert!(!shown.contains("client-secret-0123456789"));
        assert_eq!(
            c.admin_token.as_ref().map(Redacted::expose),
            Some("super-secret-admin-token")
        );
    }

    /// Every key of the config structure can be set by an environment variable.
    #[test]
    fn known_keys_cover_the_whole_structure() {
        fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
            if let serde_json::Value::Object(map) = value {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    out.push(key.clone());
                    walk(&key, v, out);
                }
            }
        }
        let mut keys = Vec::new();
        walk(
            "",
            &serde_json::to_value(Config::default()).expect("serialises"),
            &mut keys,
        );
        for key in keys {
            assert!(
                KNOWN_KEYS.contains(&key.as_str()),
                "{key} missing from KNOWN_KEYS"
            );
        }
    }

    #[test]
    fn server_limits_proxies_and_metrics_token() {
        let c = load("", &[]).expect("loads").config;
        assert_eq!(c.server.header_read_timeout.0, Duration::from_secs(10));
        assert_eq!(c.server.keep_alive_idle.0, Duration::from_secs(75));
        assert_eq!(c.server.body_read_timeout.0, Duration::from_secs(30));
        assert_eq!(c.server.max_connections, 10_000);
        assert_eq!(c.server.max_connections_per_ip, 128);
        assert!(c.trusted_proxies.is_empty());
        assert!(c.metrics_token.is_none());

        let c = load(
            "trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[server]\nkeep_alive_idle = \"2m\"",
            &[("LATCHKEY_SERVER__MAX_CONNECTIONS_PER_IP", "0")],
        )
        .expect("loads")
        .config;
        assert_eq!(c.trusted_proxies, vec!["10.0.0.0/8", "::1"]);
        assert_eq!(c.server.keep_alive_idle.0, Duration::from_secs(120));
        assert_eq!(c.server.max_connections_per_ip, 0);

        for (toml, key) in [
            (
                "trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
                "trusted_proxies[1]",
            ),
            (
                "trusted_proxies = [\"proxy.internal\"]",
                "trusted_proxies[0]",
            ),
            (
                "[server]\nheader_read_timeout = \"0s\"",
                "server.header_read_timeout",
            ),
            (
                "[server]\nbody_read_timeout = \"2h\"",
                "server.body_read_timeout",
            ),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "[server]\nmax_connections = 10\nmax_connections_per_ip = 11",
                "server.max_connections_per_ip",
            ),
            ("metrics_token = \"short\"", "metrics_token"),
            ("[server]\nidle = \"1s\"", "idle"),
        ] {
            let err = load(toml, &[]).expect_err(toml).to_string();
            assert!(err.contains(key), "{toml}: {err}");
        }
        let c = load("metrics_token = \"metrics-token-0123456789\"", &[])
            .expect("loads")
            .config;
        let shown = format!("{c:?} {}", serde_json::to_string(&c).expect("serialises"));
        assert!(!shown.contains("metrics-token-0123456789"));
    }

    #[test]
    fn rediss_and_its_ca() {
        let c = load("redis = \"rediss://:pw@redis.example:6380\"", &[])
            .expect("rediss accepted")
            .config;
        assert_eq!(c.redis.as_deref(), Some("rediss://:pw@redis.example:6380"));
        let err = load("redis = \"http://x\"", &[])
            .expect_err("bad scheme")
            .to_string();
        assert!(err.contains("`redis`"), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let toml = format!(
            "redis = \"rediss://127.0.0.1:6380\"\nredis_tls_ca = {:?}",
            ca.display().to_string()
        );
        load(&toml, &[]).expect("CA accepted");
        let err = load(
            &format!(
                "redis = \"redis://127.0.0.1\"\nredis_tls_ca = {:?}",
                ca.display().to_string()
            ),
            &[],
        )
        .expect_err("CA without rediss")
        .to_string();
        assert!(err.contains("redis_tls_ca"), "{err}");
        let err = load(
            "redis = \"rediss://127.0.0.1\"\nredis_tls_ca = \"/nonexistent/ca.pem\"",
            &[],
        )
        .expect_err("missing CA")
        .to_string();
        assert!(err.contains("redis_tls_ca"), "{err}");
    }

    #[test]
    fn byte_sizes_parse_and_show() {
        assert_eq!(parse_byte_size("10MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_byte_size("512 KiB"), Some(512 * 1024));
        assert_eq!(parse_byte_size("1000"), Some(1000));
        assert_eq!(parse_byte_size("2MB"), Some(2_000_000));
        assert_eq!(parse_byte_size("lots"), None);
        assert_eq!(parse_byte_size("99999999999GiB"), None);
        assert_eq!(
            serde_json::to_value(ByteSize(10 * 1024 * 1024)).expect("json"),
            "10MiB"
        );
        let c = load("[bff]\nmax_body = \"1MiB\"", &[])
            .expect("loads")
            .config;
        assert_eq!(c.bff.max_body, ByteSize(1 << 20));
        let c = load("[bff]\nmax_body = 4096", &[]).expect("loads").config;
        assert_eq!(c.bff.max_body, ByteSize(4096));
        let err = load("[bff]\nmax_body = \"huge\"", &[])
            .expect_err("bad size")
            .to_string();
        assert!(err.contains("max_body"), "{err}");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            parse_rate("5/s"),
            Some(Rate {
                per: Some((5, Duration::from_secs(1)))
            })
        );
        assert_eq!(parse_rate("off"), Some(Rate { per: None }));
        assert_eq!(parse_rate("0/min"), None);
        assert_eq!(parse_rate("5/fortnight"), None);
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Auth.Example.com/x?y").as_deref(),
            Some("https://auth.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("javascript://x"), None);
        assert_eq!(origin_of("http://u@h"), None);
    }
}
