//! Pure parsing helpers of the request view (no Python): header decoding, content types,
//! cookies, `Accept`, forwarded headers, query booleans. None of them panics on any input.

use std::borrow::Cow;

/// Decode header bytes as ISO-8859-1 (what ASGI servers do): never fails.
pub fn latin1(b: &[u8]) -> Cow<'_, str> {
    if b.is_ascii() {
        // ASCII is valid UTF-8.
        Cow::Borrowed(std::str::from_utf8(b).unwrap_or_default())
    } else {
        Cow::Owned(b.iter().map(|&c| char::from(c)).collect())
    }
}

/// Cookie values: UTF-8 when valid (browsers send UTF-8), else ISO-8859-1.
fn utf8_or_latin1(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => latin1(b).into_owned(),
    }
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
pub fn media_type(ct: &str) -> String {
    ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// A parameter (e.g. `charset`) of a `Content-Type` value, unquoted.
pub fn content_type_param(ct: &str, name: &str) -> Option<String> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// `application/json` and the `+json` structured syntax (`application/problem+json`, ...).
pub fn is_json_media(mt: &str) -> bool {
    mt == "application/json" || (mt.starts_with("application/") && mt.ends_with("+json"))
}

/// Parse `Cookie` header values (`a=1; b=2`), tolerating junk: pairs without `=` or with an
/// empty name are skipped; surrounding double quotes are removed from values. For a name
/// sent twice the first pair wins (browsers send the most specific path first).
pub fn parse_cookies<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    // Names already taken: a hash set keeps a header of thousands of pairs linear.
    let mut seen = std::collections::HashSet::new();
    for value in values {
        for pair in value.split(|&b| b == b';') {
            let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                continue;
            };
            let name = utf8_or_latin1(pair[..eq].trim_ascii());
            if name.is_empty() || !seen.insert(name.clone()) {
                continue;
            }
            let mut v = pair[eq + 1..].trim_ascii();
            if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
                v = &v[1..v.len() - 1];
            }
            out.push((name, utf8_or_latin1(v)));
        }
    }
    out
}

/// Whether `Accept` header values accept the media type `ct`. The most specific matching
/// range decides (`type/sub` over `type/*` over `*/*`); a range with `q=0` refuses. No
/// `Accept` header at all accepts everything.
pub fn accepts<'a>(accept: impl Iterator<Item = &'a str>, ct: &str) -> bool {
    let want = media_type(ct);
    let (want_type, want_sub) = want.split_once('/').unwrap_or((want.as_str(), ""));
    let mut any_header = false;
    // (specificity, q) of the best match so far.
    let mut best: Option<(u8, f32)> = None;
    for value in accept {
        any_header = true;
        for range in value.split(',') {
            let mut parts = range.split(';');
            let mt = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if mt.is_empty() {
                continue;
            }
            let mut q = 1.0f32;
            for p in parts {
                if let Some((k, v)) = p.split_once('=') {
                    if k.trim().eq_ignore_ascii_case("q") {
                        q = v
                            .trim()
                            .parse::<f32>()
                            .ok()
                            .filter(|q| q.is_finite())
                            .map_or(1.0, |q| q.clamp(0.0, 1.0));
                    }
                }
            }
            let (t, s) = mt.split_once('/').unwrap_or((mt.as_str(), "*"));
            let specificity = if t == "*" && s == "*" {
                1
            } else if t == want_type && s == "*" {
                2
            } else if t == want_type && s == want_sub {
                3
            } else {
                continue;
            };
            if best.is_none_or(|(sp, _)| specificity > sp) {
                best = Some((specificity, q));
            } else if let Some((sp, bq)) = best {
                if specificity == sp && q > bq {
                    best = Some((sp, q));
                }
            }
        }
    }
    if !any_header {
        return true;
    }
    best.is_some_and(|(_, q)| q > 0.0)
}

// The forwarding-header helpers live with the data plane's trusted-proxy layer, so both
// resolve clients the same way.
pub use cello_server::forwarded::{
    canonical_ip, client_from_chain, forwarded_param, parse_node, proto, split_list, valid_host,
};

/// `true`/`false` spellings of query parameters.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" | "y" => Some(true),
        "false" | "0" | "no" | "off" | "f" | "n" => Some(false),
        _ => None,
    }
}

/// An `X-Request-ID` we are willing to echo: 1–200 visible, safe characters.
pub fn sane_request_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'+' | b'/' | b'='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn latin1_never_fails() {
        assert_eq!(latin1(b"abc"), "abc");
        assert_eq!(latin1(b"caf\xe9 \xff"), "café ÿ");
        assert_eq!(latin1(b"\xc3\xa9"), "Ã©");
    }

    #[test]
    fn content_types() {
        assert_eq!(media_type(" Application/JSON ; charset=UTF-8"), "application/json");
        assert_eq!(
            content_type_param("text/plain; Charset=\"latin-1\"", "charset").as_deref(),
            Some("latin-1")
        );
        assert_eq!(content_type_param("text/plain", "charset"), None);
        assert!(is_json_media("application/json"));
        assert!(is_json_media("application/problem+json"));
        assert!(!is_json_media("text/json+x"));
    }

    #[test]
    fn cookies() {
        let c = parse_cookies(
            [
                &b"a=1; b=two"[..],
                b"c=\"q v\"; junk; =x; a=dup; d=; e=f=g",
                b"u=caf\xc3\xa9; l=caf\xe9",
            ]
            .into_iter(),
        );
        let want = [
            ("a", "1"),
            ("b", "two"),
            ("c", "q v"),
            ("d", ""),
            ("e", "f=g"),
            ("u", "café"),
            ("l", "café"),
        ];
        assert_eq!(c, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
        assert!(parse_cookies([&b";;; ;"[..], b"", b"\xff\xfe"].into_iter()).is_empty());
        let many: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("k{}=v; ", i % 5000).into_bytes())
            .collect();
        assert_eq!(parse_cookies([many.as_slice()].into_iter()).len(), 5000);
    }

    #[test]
    fn accept_header() {
        let acc = |h: &str, ct: &str| accepts([h].into_iter(), ct);
        assert!(acc("text/html, application/json;q=0.9", "application/json"));
        assert!(acc("text/html, application/json;q=0.9", "text/html; charset=utf-8"));
        assert!(!acc("text/html, application/json;q=0.9", "image/png"));
        assert!(acc("*/*", "image/png"));
        assert!(acc("image/*", "image/png"));
        assert!(!acc("image/*;q=0", "image/png"));
        assert!(!acc("*/*, image/png;q=0", "image/png"));
        assert!(acc("*/*;q=0, image/png", "image/png"));
        assert!(!acc("*/*;q=0", "text/plain"));
        assert!(acc("TEXT/PLAIN;q=abc", "text/plain"));
        assert!(!acc("", "text/plain"));
        assert!(!acc(",,;;", "text/plain"));
        assert!(accepts(std::iter::empty(), "text/plain"));
    }

    #[test]
    fn nodes() {
        assert_eq!(parse_node("203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(parse_node(" 203.0.113.7:8080 "), Some(ip("203.0.113.7")));
        assert_eq!(parse_node("\"[2001:db8::1]:4711\""), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_node("::ffff:10.0.0.1"), Some(ip("10.0.0.1")));
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
        assert_eq!(parse_node("[oops"), None);
        assert_eq!(parse_node(""), None);
    }

    #[test]
    fn forwarded_chains() {
        let trusted = |i: IpAddr| i == ip("10.0.0.1") || i == ip("10.0.0.2");
        let chain = |s: &'static str| client_from_chain(s.split(','), trusted);
        assert_eq!(chain("203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(chain("198.51.100.1, 203.0.113.7"), Some(ip("203.0.113.7")));
        assert_eq!(chain("198.51.100.1, 203.0.113.7, 10.0.0.2"), Some(ip("203.0.113.7")));
        assert_eq!(chain("10.0.0.1, 10.0.0.2"), Some(ip("10.0.0.1")));
        assert_eq!(chain("not-an-ip, ###"), None);
        assert_eq!(chain("garbage, 10.0.0.2"), Some(ip("10.0.0.2")));
        assert_eq!(chain(""), None);
    }

    #[test]
    fn forwarded_header() {
        let v = [
            "for=192.0.2.60;proto=https;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
            "for=unknown",
        ];
        assert_eq!(
            forwarded_param(v.into_iter(), "for"),
            ["192.0.2.60", "[2001:db8:cafe::17]:4711", "unknown"]
        );
        assert_eq!(forwarded_param(v.into_iter(), "proto"), ["https"]);
        assert_eq!(split_list("a=\"x,y\", b"), ["a=\"x,y\"", "b"]);
        assert!(forwarded_param(["junk;;,,=;"].into_iter(), "for").is_empty());
    }

    #[test]
    fn misc() {
        assert_eq!(proto("HTTPS, http"), Some("https"));
        assert_eq!(proto("gopher"), None);
        assert!(valid_host("example.com:8080") && valid_host("[::1]:80"));
        assert!(!valid_host("evil.com/x") && !valid_host(""));
        assert_eq!(parse_bool("TRUE"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
        assert!(sane_request_id("abc-123_X.y"));
        assert!(!sane_request_id("a b") && !sane_request_id("") && !sane_request_id(&"x".repeat(201)));
    }
}
