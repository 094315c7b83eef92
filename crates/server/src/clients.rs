//! OAuth client authentication (RFC 6749 §2.3): HTTP Basic or form fields for confidential
//! clients, `client_id` alone for public ones. Secrets are compared in constant time.
use crate::config::{ClientConfig, ClientKind};
use crate::error::ApiError;
use crate::state::AppState;
use axum::http::{HeaderMap, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Client credentials as they arrived, before checking.
pub struct Presented<'a> {
    pub headers: &'a HeaderMap,
    pub client_id: Option<&'a str>,
    pub client_secret: Option<&'a str>,
}

pub fn authenticate(state: &AppState, presented: Presented<'_>) -> Result<ClientConfig, ApiError> {
    let basic = basic_credentials(presented.headers)?;
    let (id, secret) = match (basic, presented.client_secret) {
        (Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "use one client authentication method, not two".into(),
            ));
        }
        (Some((id, secret)), None) => {
            if presented.client_id.is_some_and(|form_id| form_id != id) {
                return Err(ApiError::InvalidRequest(
                    "client_id does not match the Authorization header".into(),
                ));
            }
            (id, Some(secret))
        }
        (None, secret) => match presented.client_id {
            Some(id) => (id.to_string(), secret.map(str::to_string)),
            None => {
                return Err(ApiError::InvalidClient(
                    "client authentication is required (client_id)".into(),
                ));
            }
        },
    };
    let client = state
        .clients
        .get(&id)
        .ok_or_else(|| ApiError::InvalidClient("unknown client".into()))?;
    check_origin(client, presented.headers)?;
    match (client.kind, &client.secret, secret) {
        // Some OAuth libraries send `Basic base64("id:")` for public clients: an empty secret.
        (ClientKind::Public, _, None) => Ok(client.clone()),
        (ClientKind::Public, _, Some(s)) if s.is_empty() => Ok(client.clone()),
        (ClientKind::Public, _, Some(_)) => Err(ApiError::InvalidClient(
            "a public client has no secret".into(),
        )),
        (ClientKind::Confidential, Some(expected), Some(given))
            if crate::auth::secrets_equal(expected.expose(), &given) =>
        {
            Ok(client.clone())
        }
        (ClientKind::Confidential, _, _) => {
            tracing::warn!(target: "latchkey::security", client_id = %client.id, "client authentication failed");
            Err(ApiError::InvalidClient(
                "client authentication failed".into(),
            ))
        }
    }
}

/// A request a browser sent (it carries `Origin`) is accepted only from an origin the client
/// lists in `allowed_origins`: a page elsewhere cannot act as this client, whatever CORS lets
/// it read. Requests without `Origin` (servers, native apps) are not affected.
fn check_origin(client: &ClientConfig, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    match origin.to_str() {
        Ok(origin) if crate::cors::origin_allowed_for(client, origin) => Ok(()),
        _ => {
            tracing::info!(target: "latchkey::security", client_id = %client.id, "client used from an origin it does not list");
            Err(ApiError::InvalidClient(
                "this client may not be used from the request's Origin (see allowed_origins)"
                    .into(),
            ))
        }
    }
}

/// `Authorization: Basic base64(urlencode(id):urlencode(secret))`, or None without Basic.
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let bad = || ApiError::InvalidClient("malformed Basic credentials".into());
    let value = value.to_str().map_err(|_| bad())?;
    let Some((scheme, encoded)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape = |s: &str| form_urlencoded_decode(s).ok_or_else(bad);
    Ok(Some((unescape(id)?, unescape(secret)?)))
}

fn form_urlencoded_decode(s: &str) -> Option<String> {
    // An encoded id or secret has no raw `&` (it would be `%26`); decoding it as a form would
    // cut the value there and accept `secret&anything` as `secret`.
    if s.contains('&') {
        return None;
    }
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&format!("v={s}")).ok()?;
    pairs.into_iter().next().map(|(_, v)| v)
}

/// Resolves the requested scope against the client's: absent = all of them; otherwise every
/// requested scope must be allowed. Returns the granted scope string (space-separated).
pub fn grant_scope(allowed: &[String], requested: Option<&str>) -> Result<String, ApiError> {
    let Some(requested) = requested.filter(|r| !r.trim().is_empty()) else {
        return Ok(allowed.join(" "));
    };
    let mut granted: Vec<&str> = Vec::new();
    for scope in requested.split(' ').filter(|s| !s.is_empty()) {
        if !allowed.iter().any(|a| a == scope) {
            return Err(ApiError::InvalidScope(format!(
                "scope {scope:?} is not allowed for this client"
            )));
        }
        if !granted.contains(&scope) {
            granted.push(scope);
        }
    }
    Ok(granted.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::secrets_equal;

    #[test]
    fn scope_resolution() {
        let allowed = vec!["read".to_string(), "write".to_string()];
        assert_eq!(grant_scope(&allowed, None).expect("ok"), "read write");
        assert_eq!(grant_scope(&allowed, Some("")).expect("ok"), "read write");
        assert_eq!(grant_scope(&allowed, Some("write")).expect("ok"), "write");
        assert_eq!(
            grant_scope(&allowed, Some("write read write")).expect("ok"),
            "write read"
        );
        assert!(matches!(
            grant_scope(&allowed, Some("admin")),
            Err(ApiError::InvalidScope(_))
        ));
    }

    #[test]
    fn constant_time_equality() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
    }

    #[test]
    fn basic_decoding() {
        let mut h = HeaderMap::new();
        // "my%20client:p%40ss" -> ("my client", "p@ss")
        let v = format!("Basic {}", STANDARD.encode("my%20client:p%40ss"));
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        assert_eq!(
            basic_credentials(&h).expect("ok"),
            Some(("my client".into(), "p@ss".into()))
        );
        // A raw `&` is no encoding of anything: never read as the secret before it.
        let v = format!("Basic {}", STANDARD.encode("my%20client:p%40ss&more"));
        h.insert(header::AUTHORIZATION, v.parse().expect("header"));
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, "Basic !!!".parse().expect("header"));
        assert!(basic_credentials(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(basic_credentials(&h).expect("ok"), None);
    }
}
