//! `GET /oauth/authorize`: the OAuth 2.1 authorization endpoint (authorization code + PKCE,
//! OpenID Connect). The Latchkey cookie session is the single sign-on session.
//!
//! Errors that cannot be trusted to a redirect (unknown client, a `redirect_uri` that is not
//! exactly one registered for it, a malformed query) are a 400 page here; every other error
//! goes back to the client's `redirect_uri` with `error`, `error_description`, `state` and
//! `iss` (RFC 9207). Codes are 256-bit random values, stored only as hashes, single use, and
//! live [`CODE_TTL`] (docs/decisions/0010).
use crate::caller::authenticate_cookie;
use crate::config::{ClientConfig, ClientKind};
use crate::error::ApiError;
use crate::routes::pages::CONTENT_SECURITY_POLICY;
use crate::state::AppState;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use latchkey_core::{AuthCode, Secret, Session};
use std::collections::HashMap;

/// How long an authorization code lives (OAuth 2.1 recommends a short life; at most 60 s).
pub const CODE_TTL: time::Duration = time::Duration::seconds(60);
/// The whole query string, at most.
const MAX_QUERY: usize = 8 * 1024;
/// The parameters this endpoint reads, with their longest accepted length.
const LIMITS: &[(&str, usize)] = &[
    ("response_type", 32),
    ("client_id", 128),
    ("redirect_uri", 2000),
    ("scope", 1024),
    ("state", 512),
    ("nonce", 512),
    ("code_challenge", 128),
    ("code_challenge_method", 16),
    ("prompt", 32),
    ("max_age", 10),
    ("login_hint", 256),
];
/// The OIDC scopes every client may ask for, on top of its own.
pub const OIDC_SCOPES: [&str; 2] = ["openid", "profile"];

/// An error sent back to the client's redirect URI.
struct Refusal {
    error: &'static str,
    description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        error,
        description: description.into(),
    }
}

pub async fn authorize(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    if query.len() > MAX_QUERY {
        return error_page("The authorization request is too long.");
    }
    let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(&query) else {
        return error_page("The authorization request is malformed.");
    };
    let mut params: HashMap<&str, &str> = HashMap::new();
    let mut duplicated: Option<&str> = None;
    for (name, value) in &pairs {
        if params.insert(name.as_str(), value.as_str()).is_some() && duplicated.is_none() {
            duplicated = Some(name.as_str());
        }
    }
    // The client and where to send the user back: decided before anything is redirected.
    if matches!(duplicated, Some("client_id" | "redirect_uri")) {
        return error_page("The authorization request names its client or redirect URI twice.");
    }
    let Some(client) = params
        .get("client_id")
        .filter(|id| id.len() <= 128)
        .and_then(|id| state.clients.get(*id))
    else {
        return error_page("The authorization request names no known client.");
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) => match client.redirect_uris.iter().find(|r| r.as_str() == *uri) {
            Some(registered) => registered.clone(),
            None => {
                return error_page(
                    "The redirect URI is not registered for this client (exact match required).",
                );
            }
        },
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return error_page("The authorization request needs a redirect_uri."),
    };
    // `state` is echoed only if it is well formed.
    let echo_state = params
        .get("state")
        .filter(|s| s.len() <= 512 && is_vschar(s))
        .map(|s| s.to_string());
    let back = Back {
        issuer: &state.issuer,
        redirect_uri: &redirect_uri,
        state: echo_state.as_deref(),
    };
    match decide(
        &state,
        &headers,
        client,
        &redirect_uri,
        &params,
        duplicated,
        &query,
    )
    .await
    {
        Ok(Decision::Code(code)) => back.redirect(&[("code", &code)]),
        Ok(Decision::Login(location)) => found(&location),
        Err(Outcome::Refused(r)) => {
            back.redirect(&[("error", r.error), ("error_description", &r.description)])
        }
        Err(Outcome::Api(e)) => e.into_response(),
    }
}

enum Decision {
    /// A code was issued: its value.
    Code(String),
    /// The user must log in first: the `/login` URL that returns here.
    Login(String),
}

enum Outcome {
    Refused(Refusal),
    /// The store could not answer (503), never a guess.
    Api(ApiError),
}

impl From<Refusal> for Outcome {
    fn from(r: Refusal) -> Self {
        Outcome::Refused(r)
    }
}

impl From<ApiError> for Outcome {
    fn from(e: ApiError) -> Self {
        Outcome::Api(e)
    }
}

async fn decide(
    state: &AppState,
    headers: &HeaderMap,
    client: &ClientConfig,
    redirect_uri: &str,
    params: &HashMap<&str, &str>,
    duplicated: Option<&str>,
    query: &str,
) -> Result<Decision, Outcome> {
    if let Some(name) = duplicated {
        return Err(refuse(
            "invalid_request",
            format!("parameter {:?} is given more than once", truncate(name)),
        )
        .into());
    }
    for (name, max) in LIMITS {
        if let Some(value) = params.get(name) {
            if value.len() > *max {
                return Err(refuse("invalid_request", format!("{name} is too long")).into());
            }
            if value.chars().any(char::is_control) {
                return Err(refuse(
                    "invalid_request",
                    format!("{name} contains control characters"),
                )
                .into());
            }
        }
    }
    if params.get("state").is_some_and(|s| !is_vschar(s)) {
        return Err(refuse("invalid_request", "state has characters outside %x20-7E").into());
    }
    match params.get("response_type") {
        None => return Err(refuse("invalid_request", "response_type is required").into()),
        Some(&"code") => {}
        Some(_) => {
            return Err(refuse(
                "unsupported_response_type",
                "only response_type=code is supported",
            )
            .into());
        }
    }
    if !client.allows_grant("authorization_code") {
        return Err(refuse(
            "unauthorized_client",
            "this client may not use the authorization code flow (see its grant_types)",
        )
        .into());
    }
    let scope = requested_scope(client, params.get("scope").copied())?;
    let nonce = params.get("nonce").map(|n| n.to_string());
    if nonce
        .as_deref()
        .is_some_and(|n| n.is_empty() || !is_vschar(n))
    {
        return Err(refuse("invalid_request", "nonce is malformed").into());
    }
    let code_challenge = pkce_challenge(client, params)?;
    let prompt = match params.get("prompt") {
        None => None,
        Some(&"none") => Some(Prompt::None),
        Some(&"login") => Some(Prompt::Login),
        Some(_) => {
            return Err(refuse("invalid_request", "prompt must be none or login").into());
        }
    };
    let max_age = match params.get("max_age") {
        None => None,
        Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => Some(
            text.parse::<i64>()
                .map_err(|_| refuse("invalid_request", "max_age is too large"))?,
        ),
        Some(_) => {
            return Err(refuse("invalid_request", "max_age must be a number of seconds").into());
        }
    };
    let login_hint = params.get("login_hint").copied();

    let session = signed_in(state, headers).await?;
    let now = state.clock.now();
    let fresh_enough =
        |s: &Session| max_age.is_none_or(|max| (now - s.created_at).whole_seconds() <= max);
    let session = match (session, prompt) {
        (Some(s), Some(Prompt::None) | None) if fresh_enough(&s) => s,
        (_, Some(Prompt::None)) => {
            return Err(refuse(
                "login_required",
                "the user is not logged in at Latchkey (or not recently enough)",
            )
            .into());
        }
        _ => return Ok(Decision::Login(login_url(query, login_hint))),
    };
    if !client.first_party {
        // No consent page yet: third-party clients are refused (docs/decisions/0010).
        return Err(if prompt == Some(Prompt::None) {
            refuse(
                "consent_required",
                "this client needs the user's consent, which Latchkey cannot ask for yet",
            )
        } else {
            refuse(
                "access_denied",
                "this client needs the user's consent, which Latchkey cannot ask for yet",
            )
        }
        .into());
    }

    let code = Secret::generate();
    let record = AuthCode {
        hash: code.hash(),
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_string(),
        code_challenge,
        user_id: session.user_id,
        session_id: session.id,
        nonce,
        auth_time: session.created_at,
        scope,
        created_at: now,
        expires_at: now + CODE_TTL,
        consumed_at: None,
        issued_session: None,
    };
    state
        .store
        .insert_auth_code(&record)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(
        user_id = %session.user_id, sid = %session.id, client_id = %client.id,
        "authorization code issued"
    );
    Ok(Decision::Code(code.to_text()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prompt {
    None,
    Login,
}

/// The live cookie session of the request, checked as the cookie-mode extractor checks it
/// (timeouts, the user's epoch and ban); `None` without one. A store failure is a 503.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Result<Option<Session>, Outcome> {
    let Ok(Some(secret)) = state.cookie.read(headers) else {
        return Ok(None);
    };
    match authenticate_cookie(state, &secret).await {
        Ok(session) => Ok(Some(session)),
        Err(ApiError::Unauthorized(_)) => Ok(None),
        Err(e) => Err(Outcome::Api(e)),
    }
}

/// The scope to grant: the client's own scopes when none is asked for; otherwise each asked
/// scope must be the client's or an OIDC scope.
fn requested_scope(client: &ClientConfig, requested: Option<&str>) -> Result<String, Refusal> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(client.scopes.join(" "));
    };
    if !requested.bytes().all(|b| {
        b == b' ' || (b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
    }) {
        return Err(refuse(
            "invalid_scope",
            "scope has characters outside RFC 6749 §3.3",
        ));
    }
    let mut allowed = client.scopes.clone();
    allowed.extend(OIDC_SCOPES.iter().map(|s| s.to_string()));
    crate::clients::grant_scope(&allowed, Some(requested)).map_err(|e| match e {
        ApiError::InvalidScope(why) => refuse("invalid_scope", why),
        other => refuse("invalid_scope", other.to_string()),
    })
}

/// The S256 challenge: required of public clients; `plain` (or no method) refused; a
/// confidential client may omit PKCE, but what it sends is enforced.
fn pkce_challenge(
    client: &ClientConfig,
    params: &HashMap<&str, &str>,
) -> Result<Option<String>, Refusal> {
    match (
        params.get("code_challenge"),
        params.get("code_challenge_method"),
    ) {
        (None, None) if client.kind == ClientKind::Confidential => Ok(None),
        (None, None) => Err(refuse(
            "invalid_request",
            "a public client must use PKCE (code_challenge with code_challenge_method=S256)",
        )),
        (None, Some(_)) => Err(refuse(
            "invalid_request",
            "code_challenge_method without code_challenge",
        )),
        (Some(_), method) if method != Some(&"S256") => Err(refuse(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not supported)",
        )),
        (Some(challenge), _) => {
            // BASE64URL(SHA-256(verifier)) without padding: exactly 43 characters.
            if challenge.len() == 43
                && challenge
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Ok(Some(challenge.to_string()))
            } else {
                Err(refuse(
                    "invalid_request",
                    "code_challenge must be the 43-character base64url S256 hash",
                ))
            }
        }
    }
}

/// `/login?return_to=<this request without prompt>[&login_hint=…]`. `prompt=login` is dropped
/// from the way back, so the fresh login is not asked for again.
fn login_url(query: &str, login_hint: Option<&str>) -> String {
    let kept: Vec<(String, String)> = serde_urlencoded::from_str::<Vec<(String, String)>>(query)
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, _)| name != "prompt")
        .collect();
    let back = format!(
        "/oauth/authorize?{}",
        serde_urlencoded::to_string(&kept).unwrap_or_default()
    );
    let mut login: Vec<(&str, &str)> = vec![("return_to", &back)];
    if let Some(hint) = login_hint {
        login.push(("login_hint", hint));
    }
    format!(
        "/login?{}",
        serde_urlencoded::to_string(&login).unwrap_or_default()
    )
}

/// Where, and with what, the user goes back to the client.
struct Back<'a> {
    issuer: &'a str,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Back<'_> {
    fn redirect(&self, fields: &[(&str, &str)]) -> Response {
        let mut all: Vec<(&str, &str)> = fields.to_vec();
        if let Some(state) = self.state {
            all.push(("state", state));
        }
        all.push(("iss", self.issuer));
        let separator = if self.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        let location = format!(
            "{}{separator}{}",
            self.redirect_uri,
            serde_urlencoded::to_string(&all).unwrap_or_default()
        );
        found(&location)
    }
}

fn found(location: &str) -> Response {
    let Ok(value) = HeaderValue::from_str(location) else {
        return error_page("The redirect could not be built.");
    };
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, value);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// The 400 page shown at Latchkey when the request cannot be answered with a redirect. The
/// text is fixed (never echoes the request).
pub(crate) fn error_page(message: &'static str) -> Response {
    let body = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in error · Latchkey</title>\
         <link rel=\"stylesheet\" href=\"/assets/latchkey.css\"></head>\
         <body><main><h1>This sign-in request cannot be completed</h1><p id=\"error\">{message}</p>\
         <p>Go back to the application and try again.</p></main></body></html>\n"
    );
    let mut response = (StatusCode::BAD_REQUEST, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Whether `path` may be where `/login` sends the browser after logging in: a path on the
/// issuer only. One leading `/` (not `//`, which is another host), no backslash (browsers
/// read `/\\host` as `//host`), no scheme, no space or control character, bounded.
pub fn safe_return_path(path: &str) -> bool {
    path.len() <= 4096
        && path.starts_with('/')
        && !path.starts_with("//")
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control() || c.is_whitespace())
        && !path
            .split(['?', '#'])
            .next()
            .is_some_and(|p| p.contains("/..") || p.contains("/./"))
}

/// RFC 6749 VSCHAR: %x20-7E.
fn is_vschar(s: &str) -> bool {
    s.bytes().all(|b| (0x20..=0x7E).contains(&b))
}

fn truncate(name: &str) -> String {
    name.chars().take(32).collect()
}

#[cfg(test)]
mod tests {
    use super::safe_return_path;

    #[test]
    fn return_paths_stay_on_the_issuer() {
        for ok in [
            "/oauth/authorize?client_id=web&state=x",
            "/oauth/authorize?state=/../x",
            "/account",
            "/",
        ] {
            assert!(safe_return_path(ok), "{ok}");
        }
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example/",
            "\\\\evil.example",
            "/\tevil",
            "/\t/evil.example",
            "javascript:alert(1)",
            "evil.example",
            "",
            " /account",
            "/a/../..//evil",
            "/\u{0}",
        ] {
            assert!(!safe_return_path(bad), "{bad:?}");
        }
        assert!(!safe_return_path(&format!("/{}", "a".repeat(5000))));
    }
}
