//! Client address, scheme and host behind trusted proxies (`Forwarded`, RFC 7239, and
//! `X-Forwarded-*`), for the stack's `trusted_proxy` layer.

use std::net::IpAddr;

use http::HeaderMap;

use crate::ext::ClientInfo;
use crate::service::AppState;

fn values<'a>(headers: &'a HeaderMap, name: &str) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// `for=` / `proto=` / `host=` elements of `Forwarded`, in order.
fn forwarded<'a>(headers: &'a HeaderMap, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    values(headers, "forwarded").filter_map(move |elem| {
        elem.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case(key).then(|| v.trim().trim_matches('"'))
        })
    })
}

fn parse_ip(v: &str) -> Option<IpAddr> {
    let v = v.trim();
    if let Ok(ip) = v.parse() {
        return Some(ip);
    }
    // `[v6]:port`, `[v6]`, `v4:port`
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    v.rsplit_once(':').and_then(|(ip, _)| ip.parse().ok())
}

/// Resolve the client of a request whose socket peer `peer` is a trusted proxy: walk the
/// forwarding chain from the right, skipping trusted hops.
pub fn resolve(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> ClientInfo {
    let mut chain: Vec<&str> = forwarded(headers, "for").collect();
    if chain.is_empty() {
        chain = values(headers, "x-forwarded-for").collect();
    }
    let mut ip = Some(peer);
    for hop in chain.iter().rev() {
        match parse_ip(hop) {
            Some(h) => {
                ip = Some(h);
                if !state.is_trusted(h) {
                    break;
                }
            }
            None => break,
        }
    }
    let proto = values(headers, "x-forwarded-proto")
        .next()
        .or_else(|| forwarded(headers, "proto").next())
        .and_then(|p| match p.to_ascii_lowercase().as_str() {
            "https" | "wss" => Some("https"),
            "http" | "ws" => Some("http"),
            _ => None,
        });
    let host = values(headers, "x-forwarded-host")
        .next()
        .or_else(|| forwarded(headers, "host").next())
        .map(str::to_owned);
    ClientInfo {
        ip,
        scheme: proto,
        host,
    }
}
