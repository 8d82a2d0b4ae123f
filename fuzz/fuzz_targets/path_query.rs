//! Path and query decoding as the request view does it (percent-decoding to UTF-8,
//! `form_urlencoded` pairs), plus the pure header helpers of `request/parse.rs` (cookies,
//! `Accept`, `Forwarded`, hosts, booleans) and the trusted-proxy resolution of
//! `forwarded.rs` over headers made from the input. Checked: nothing panics; decoding is
//! total; a forwarded host handed out is always a plausible host.
#![no_main]

use cello_fuzz::{forwarded, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (path, query) = match data.iter().position(|&b| b == b'?') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let decoded = percent_encoding::percent_decode(path).decode_utf8();
    if let Ok(p) = &decoded {
        let _ = cello_fuzz::router::is_safe_relative_path(p);
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (k, v) in &pairs {
        let _ = parse::parse_bool(v);
        let _ = parse::sane_request_id(k);
    }
    let text = parse::latin1(data);
    let _ = parse::media_type(&text);
    let _ = parse::content_type_param(&text, "charset");
    let _ = parse::is_json_media(&text);
    let _ = parse::parse_cookies(data.split(|&b| b == b'\n'));
    let _ = parse::accepts(text.split('\n'), "application/json");
    let items = parse::split_list(&text);
    let _ = parse::forwarded_param(items.iter().copied(), "for");
    let _ = parse::client_from_chain(items.iter().copied(), |ip| ip.is_loopback());
    for item in &items {
        let _ = parse::parse_node(item);
        let _ = parse::proto(item);
        let _ = parse::valid_host(item);
    }
    // The trusted-proxy resolution over headers made of the input's `name: value` lines.
    let mut headers = http::HeaderMap::new();
    for line in text.split('\n') {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    let peer: std::net::IpAddr = [10, 0, 0, 1].into();
    let _ = forwarded::client_ip(peer, &headers, |ip| ip == peer || ip.is_loopback());
    let _ = forwarded::forwarded_scheme(&headers);
    if let Some(host) = forwarded::forwarded_host(&headers) {
        assert!(parse::valid_host(&host), "{host:?}");
    }
});
