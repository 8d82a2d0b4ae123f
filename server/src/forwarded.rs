//! Client address, scheme and host behind trusted proxies (`Forwarded`, RFC 7239, and
//! `X-Forwarded-*`), for the stack's `trusted_proxy` layer.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

use crate::ext::ClientInfo;
use crate::service::AppState;

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl DoubleEndedIterator<Item = &'a str> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok())
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address in a forwarding header: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]:80`, optionally double-quoted. `unknown` and obfuscated names → None.
pub fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical_ip(ip));
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(canonical_ip(sa.ip()));
    }
    let inner = s.strip_prefix('[').and_then(|r| r.split(']').next())?;
    inner.parse::<IpAddr>().ok().map(canonical_ip)
}

/// The client address from a forwarding chain (leftmost = original client): walking from the
/// right, skip trusted proxies and return the first untrusted hop. An unparsable hop stops
/// the walk (nothing left of it can be believed): the last trusted hop seen is returned.
pub fn client_from_chain<'a>(
    chain: impl DoubleEndedIterator<Item = &'a str>,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> Option<IpAddr> {
    let mut last_trusted = None;
    for hop in chain.rev() {
        match parse_node(hop) {
            Some(ip) if is_trusted(ip) => last_trusted = Some(ip),
            Some(ip) => return Some(ip),
            None => return last_trusted,
        }
    }
    last_trusted
}

/// Split a header value on commas outside double quotes.
pub fn split_list(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

/// The values of parameter `key` (`for`, `proto`, `host`) of RFC 7239 `Forwarded` elements,
/// in order; elements without it are skipped.
pub fn forwarded_param<'a>(values: impl Iterator<Item = &'a str>, key: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    for value in values {
        for element in split_list(value) {
            for pair in element.split(';') {
                if let Some((k, v)) = pair.split_once('=') {
                    if k.trim().eq_ignore_ascii_case(key) {
                        out.push(v.trim().trim_matches('"'));
                    }
                }
            }
        }
    }
    out
}

/// `http` or `https` from a forwarded proto value (the first, client-facing entry).
pub fn proto(value: &str) -> Option<&'static str> {
    let first = value.split(',').next()?.trim().trim_matches('"');
    if first.eq_ignore_ascii_case("https") || first.eq_ignore_ascii_case("wss") {
        Some("https")
    } else if first.eq_ignore_ascii_case("http") || first.eq_ignore_ascii_case("ws") {
        Some("http")
    } else {
        None
    }
}

/// A plausible `Host` value: a name, IPv4 or bracketed IPv6 with an optional port.
pub fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']'))
}

/// The client address behind a trusted `peer`: `X-Forwarded-For`, then `Forwarded: for=`,
/// then `X-Real-IP`, walking chains from the right past trusted hops; else the peer.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, is_trusted: impl Fn(IpAddr) -> bool) -> IpAddr {
    let xff: Vec<&str> = values(headers, "x-forwarded-for").flat_map(|v| v.split(',')).collect();
    if let Some(ip) = client_from_chain(xff.into_iter(), &is_trusted) {
        return ip;
    }
    let fwd = forwarded_param(values(headers, "forwarded"), "for");
    if let Some(ip) = client_from_chain(fwd.into_iter(), &is_trusted) {
        return ip;
    }
    values(headers, "x-real-ip")
        .next()
        .and_then(parse_node)
        .unwrap_or_else(|| canonical_ip(peer))
}

/// The scheme the client used, from `X-Forwarded-Proto` or `Forwarded: proto=`.
pub fn forwarded_scheme(headers: &HeaderMap) -> Option<&'static str> {
    if let Some(p) = values(headers, "x-forwarded-proto").next().and_then(proto) {
        return Some(p);
    }
    forwarded_param(values(headers, "forwarded"), "proto")
        .first()
        .and_then(|p| proto(p))
}

/// The host the client asked for, from `X-Forwarded-Host` or `Forwarded: host=`.
pub fn forwarded_host(headers: &HeaderMap) -> Option<String> {
    if let Some(h) = values(headers, "x-forwarded-host").next() {
        let first = h.split(',').next().unwrap_or("").trim();
        if valid_host(first) {
            return Some(first.to_owned());
        }
    }
    forwarded_param(values(headers, "forwarded"), "host")
        .first()
        .filter(|h| valid_host(h))
        .map(|h| (*h).to_owned())
}

/// Resolve the client of a request whose socket peer `peer` is a trusted proxy.
pub fn resolve(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> ClientInfo {
    ClientInfo {
        ip: client_ip(peer, headers, |ip| state.is_trusted(ip)),
        scheme: forwarded_scheme(headers),
        host: forwarded_host(headers),
    }
}
