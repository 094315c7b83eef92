//! Facts about the connection: the client's address and user agent, bounded for storage.
//!
//! The client address is the TCP peer, unless the peer is one of `trusted_proxies`: then the
//! `X-Forwarded-For` header (or, when that is absent, `Forwarded`) is walked from the right,
//! and the right-most address that is not itself a trusted proxy is the client. A malformed
//! header, or one longer than [`MAX_HOPS`] entries without an untrusted address, is not
//! believed: the peer is the client then. See docs/operations.md, "Behind a reverse proxy".
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use ipnet::IpNet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

const MAX_USER_AGENT: usize = 256;
/// Forwarded entries examined from the right before giving up (and using the peer).
pub const MAX_HOPS: usize = 32;

/// Who is calling, as far as the network tells.
pub struct ClientInfo {
    /// The client's address (see the module documentation), or `unknown` without a socket.
    pub ip: String,
    /// The key of per-address throttles: the address for IPv4, its /64 for IPv6 (one
    /// customer usually holds a whole /64, so rotating through it must not reset a limit).
    pub throttle_key: String,
    pub user_agent: Option<String>,
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Infallible> {
        // Absent only when the router runs without a socket (in-process tests).
        let peer = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|ConnectInfo(addr)| addr.ip());
        let client = peer.map(|peer| client_address(peer, &parts.headers, &state.trusted_proxies));
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| {
                ua.chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_USER_AGENT)
                    .collect()
            });
        Ok(Self {
            ip: client.map_or_else(|| "unknown".to_string(), |ip| ip.to_string()),
            throttle_key: client.map_or_else(|| "unknown".to_string(), throttle_key),
            user_agent,
        })
    }
}

/// The configured `trusted_proxies`, parsed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses validated configuration entries (an invalid one is skipped: validation has
    /// refused it before a server starts).
    pub fn new(entries: &[String]) -> Self {
        Self(entries.iter().filter_map(|e| parse_cidr(e).ok()).collect())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or a single address (`127.0.0.1`, `::1`).
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = IpNet::from_str(text) {
        return Ok(net.trunc());
    }
    IpAddr::from_str(text).map(IpNet::from).map_err(|_| {
        format!("{text:?} is not an address range like \"10.0.0.0/8\", \"2001:db8::/32\" or \"127.0.0.1\"")
    })
}

/// The per-address throttle key of `ip`: itself for IPv4, its /64 network for IPv6.
pub fn throttle_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", Ipv6Addr::from(prefix))
        }
    }
}

/// The client address of a request from `peer` (see the module documentation).
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if !trusted.contains(peer) {
        return peer;
    }
    let hops = if headers.contains_key("x-forwarded-for") {
        header_entries(headers, "x-forwarded-for")
    } else if headers.contains_key(header::FORWARDED) {
        header_entries(headers, "forwarded")
            .map(|entries| entries.into_iter().map(forwarded_for).collect())
    } else {
        return peer;
    };
    let Some(hops) = hops else {
        return peer;
    };
    let mut leftmost_trusted = None;
    for (i, hop) in hops.iter().rev().enumerate() {
        if i >= MAX_HOPS {
            return peer;
        }
        let Some(ip) = parse_hop(hop) else {
            return peer;
        };
        if !trusted.contains(ip) {
            return ip;
        }
        leftmost_trusted = Some(ip);
    }
    // Every hop is a trusted address: the client is inside a trusted range itself.
    leftmost_trusted.unwrap_or(peer)
}

/// The comma-separated entries of every `name` header line, in order; `None` when a line is
/// not visible ASCII.
fn header_entries<'a>(headers: &'a HeaderMap, name: &str) -> Option<Vec<&'a str>> {
    let mut entries = Vec::new();
    for value in headers.get_all(name) {
        let text = value.to_str().ok()?;
        entries.extend(text.split(',').map(str::trim));
        if entries.len() > 4 * MAX_HOPS {
            // Far more than any chain of proxies: only the right-most ones matter anyway,
            // but a header this long is not believed.
            return None;
        }
    }
    Some(entries)
}

/// The `for=` value of one `Forwarded` element (RFC 7239), or "" (malformed) when it has none.
fn forwarded_for(element: &str) -> &str {
    element
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("for"))
        .map_or("", |(_, value)| {
            let value = value.trim();
            value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value)
        })
}

/// `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`; anything else (`unknown`, obfuscated
/// identifiers, garbage) is `None`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if hop.is_empty() || hop.len() > 64 {
        return None;
    }
    if let Ok(ip) = IpAddr::from_str(hop) {
        return Some(ip.to_canonical());
    }
    if let Ok(addr) = SocketAddr::from_str(hop) {
        return Some(addr.ip().to_canonical());
    }
    hop.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| Ipv6Addr::from_str(h).ok())
        .map(|ip| IpAddr::V6(ip).to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn client(peer: &str, pairs: &[(&'static str, &str)], list: &[&str]) -> String {
        client_address(ip(peer), &headers(pairs), &trusted(list)).to_string()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let h = [("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")];
        assert_eq!(client("9.9.9.9", &h, &[]), "9.9.9.9");
        assert_eq!(client("9.9.9.9", &h, &["10.0.0.0/8"]), "9.9.9.9");
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let list = ["10.0.0.0/8", "192.168.1.1"];
        // The client forged the left-most entry; the proxy appended the real address.
        assert_eq!(
            client(
                "10.0.0.2",
                &[("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7")],
                &list
            ),
            "1.2.3.4"
        );
        // Several header lines are one list, in order.
        assert_eq!(
            client(
                "192.168.1.1",
                &[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "1.2.3.4:5555")
                ],
                &list
            ),
            "1.2.3.4"
        );
        // Every hop trusted: the client is inside a trusted range.
        assert_eq!(
            client(
                "10.0.0.2",
                &[("x-forwarded-for", "10.1.1.1, 10.0.0.7")],
                &list
            ),
            "10.1.1.1"
        );
        // No header from a trusted peer: the peer itself (a health check, say).
        assert_eq!(client("10.0.0.2", &[], &list), "10.0.0.2");
    }

    #[test]
    fn forwarded_is_read_only_without_x_forwarded_for() {
        let list = ["127.0.0.1/32"];
        assert_eq!(
            client(
                "127.0.0.1",
                &[(
                    "forwarded",
                    "for=6.6.6.6;proto=https, For=\"[2001:db8:cafe::17]:4711\";by=127.0.0.1"
                )],
                &list
            ),
            "2001:db8:cafe::17"
        );
        assert_eq!(
            client(
                "127.0.0.1",
                &[("forwarded", "for=1.2.3.4"), ("x-forwarded-for", "5.6.7.8")],
                &list
            ),
            "5.6.7.8"
        );
    }

    #[test]
    fn malformed_or_overlong_headers_are_not_believed() {
        let list = ["127.0.0.0/8"];
        for bad in [
            "not-an-ip",
            "1.2.3.4, ",
            "1.2.3.4,,127.0.0.5",
            "unknown",
            "1.2.3.4\u{1b}[31m",
            "999.1.1.1",
        ] {
            let Ok(value) = HeaderValue::from_str(bad) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-for", value);
            assert_eq!(
                client_address(ip("127.0.0.1"), &h, &trusted(&list)).to_string(),
                "127.0.0.1",
                "{bad:?}"
            );
        }
        assert_eq!(
            client("127.0.0.1", &[("forwarded", "for=unknown")], &list),
            "127.0.0.1"
        );
        assert_eq!(
            client("127.0.0.1", &[("forwarded", "proto=https")], &list),
            "127.0.0.1"
        );
        // Non-ASCII bytes in the header.
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.2.3.4\xff").expect("opaque bytes"),
        );
        assert_eq!(
            client_address(ip("127.0.0.1"), &h, &trusted(&list)).to_string(),
            "127.0.0.1"
        );
        // A long chain of trusted hops is not walked to its end.
        let chain = vec!["127.0.0.9"; MAX_HOPS + 1].join(", ");
        let long = format!("1.2.3.4, {chain}");
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", &long)], &list),
            "127.0.0.1"
        );
        let huge = vec!["1.2.3.4"; 4 * MAX_HOPS + 1].join(",");
        assert_eq!(
            client("127.0.0.1", &[("x-forwarded-for", &huge)], &list),
            "127.0.0.1"
        );
    }

    #[test]
    fn ipv4_mapped_peers_and_hops_are_ipv4() {
        assert_eq!(
            client(
                "::ffff:127.0.0.1",
                &[("x-forwarded-for", "::ffff:1.2.3.4")],
                &["127.0.0.1"]
            ),
            "1.2.3.4"
        );
    }

    #[test]
    fn ipv6_addresses_are_throttled_per_64() {
        assert_eq!(throttle_key(ip("1.2.3.4")), "1.2.3.4");
        assert_eq!(throttle_key(ip("::ffff:1.2.3.4")), "1.2.3.4");
        let a = throttle_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        let b = throttle_key(ip("2001:db8:1:2::1"));
        let c = throttle_key(ip("2001:db8:1:3::1"));
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn cidrs_parse() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").expect("ok").to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_cidr("::1").expect("ok").to_string(), "::1/128");
        assert_eq!(
            parse_cidr(" 127.0.0.1 ").expect("ok").to_string(),
            "127.0.0.1/32"
        );
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("localhost").is_err());
        assert!(trusted(&["10.0.0.0/8"]).contains(ip("::ffff:10.2.3.4")));
    }
}
