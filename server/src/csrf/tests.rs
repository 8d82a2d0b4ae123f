#![allow(clippy::field_reassign_with_default)] // tests build configs step by step
//! In-process tests of the CSRF layer through the whole stack (`App::oneshot`).

use std::sync::Arc;

use bytes::Bytes;
use cello_config::{CsrfConfig, Secret, ServerConfig, SessionConfig};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::CsrfToken;
use crate::body::{RequestBody, ResponseBody};
use crate::endpoint::RoutedRequest;
use crate::session::SessionHandle;
use crate::{App, Server, Target};

const SECRET: &str = "0123456789abcdef0123456789abcdef-csrf";

/// Answers with the token the layer gave the request, and the body length; `/login`
/// rotates the session.
fn endpoint() -> Target {
    Target::Endpoint(Arc::new(|req: RoutedRequest| async move {
        if req.parts.uri.path() == "/login" {
            if let Some(s) = req.parts.extensions.get::<SessionHandle>() {
                s.0.regenerate();
            }
        }
        let token = req.parts.extensions.get::<CsrfToken>().map(|t| t.0.to_string());
        Response::new(ResponseBody::full(format!(
            "{} {}",
            token.unwrap_or_default(),
            req.body.len()
        )))
    }))
}

fn app(sessions: bool, trusted_origins: Vec<String>) -> App {
    let mut c = ServerConfig::default();
    c.trusted_proxies = vec!["10.0.0.0/8".into()];
    c.csrf = Some(CsrfConfig {
        secret: Some(Secret(SECRET.into())),
        exempt_paths: vec!["/hook".into()],
        trusted_origins,
        ..CsrfConfig::default()
    });
    if sessions {
        c.session = Some(SessionConfig {
            secret: Some(Secret(SECRET.into())),
            store: "memory".into(),
            ..SessionConfig::default()
        });
    }
    let mut b = Server::builder(c);
    for p in ["/form", "/hook", "/login"] {
        b.route(&[Method::GET, Method::POST], p, endpoint()).unwrap();
    }
    b.build().unwrap()
}

async fn send(
    app: &App,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
    tls: bool,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri).header("host", "app.example");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if tls {
        // The peer is a trusted proxy that terminated TLS (item 8: the proxy decides the scheme).
        req = req.header("x-forwarded-proto", "https");
    }
    let req = req.body(RequestBody::full(body.to_owned())).unwrap();
    let resp = app.oneshot(req, Some(([10, 0, 0, 1], 4000).into())).await;
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .collect()
}

fn token_of(h: &HeaderMap) -> String {
    cookies(h)
        .iter()
        .find_map(|c| c.strip_prefix("csrftoken=").map(str::to_owned))
        .expect("a csrftoken cookie")
}

#[tokio::test]
async fn unsafe_requests_need_the_cookie_token_in_the_header_or_form_field() {
    let app = app(false, vec![]);
    assert!(app.layers().contains(&"csrf"));
    let (s, h, body) = send(&app, Method::GET, "/form", &[], "", false).await;
    assert_eq!(s, StatusCode::OK);
    let token = token_of(&h);
    let set = h["set-cookie"].to_str().unwrap();
    assert!(set.contains("SameSite=Lax") && !set.contains("HttpOnly") && !set.contains("Secure"));
    assert!(
        String::from_utf8_lossy(&body).starts_with(&token),
        "request.csrf_token() is the cookie's"
    );
    let cookie = format!("csrftoken={token}");
    // Safe again with the valid cookie: no new cookie.
    let (_, h, _) = send(&app, Method::GET, "/form", &[("cookie", &cookie)], "", false).await;
    assert!(cookies(&h).is_empty());
    // Missing everything, missing the header, wrong header, forged cookie and header.
    for (hs, why) in [
        (vec![], "no cookie"),
        (vec![("cookie", cookie.as_str())], "no token"),
        (
            vec![("cookie", cookie.as_str()), ("x-csrf-token", "nope")],
            "wrong token",
        ),
        (
            vec![
                ("cookie", "csrftoken=AAAAAAAAAAAAAAAAAAAAAA.AAAA"),
                ("x-csrf-token", "AAAAAAAAAAAAAAAAAAAAAA.AAAA"),
            ],
            "forged pair",
        ),
    ] {
        let (s, h, body) = send(&app, Method::POST, "/form", &hs, "", false).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{why}");
        assert_eq!(h["content-type"], "application/problem+json", "{why}");
        assert!(String::from_utf8_lossy(&body).contains("CSRF"), "{why}");
    }
    let ok = [("cookie", cookie.as_str()), ("x-csrf-token", token.as_str())];
    assert_eq!(
        send(&app, Method::POST, "/form", &ok, "", false).await.0,
        StatusCode::OK
    );
    // The form field, urlencoded: the body still reaches the handler whole.
    let form = format!("a=1&csrf_token={}", urlencode(&token));
    let hs = [
        ("cookie", cookie.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
    ];
    let (s, _, body) = send(&app, Method::POST, "/form", &hs, &form, false).await;
    assert_eq!(s, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).ends_with(&format!(" {}", form.len())));
    // Multipart.
    let mp = format!(
        "--XX\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n{token}\r\n--XX\r\n\
         Content-Disposition: form-data; name=\"f\"; filename=\"a.txt\"\r\n\r\nhello\r\n--XX--\r\n"
    );
    let hs = [
        ("cookie", cookie.as_str()),
        ("content-type", "multipart/form-data; boundary=XX"),
    ];
    assert_eq!(
        send(&app, Method::POST, "/form", &hs, &mp, false).await.0,
        StatusCode::OK
    );
    let bad = mp.replace(&token, "wrong");
    assert_eq!(
        send(&app, Method::POST, "/form", &hs, &bad, false).await.0,
        StatusCode::FORBIDDEN
    );
    // Exempt paths are never checked.
    assert_eq!(
        send(&app, Method::POST, "/hook", &[], "", false).await.0,
        StatusCode::OK
    );
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn tokens_are_bound_to_the_session_and_rotate_with_it() {
    let app = app(true, vec![]);
    // Session before CSRF, both after the trusted-proxy layer (stack.rs's order).
    assert_eq!(
        app.layers(),
        ["connection", "trusted_proxy", "session", "csrf", "protocol", "router"]
    );
    let (_, h, _) = send(&app, Method::GET, "/form", &[], "", false).await;
    let jar = cookies(&h);
    assert_eq!(jar.len(), 2, "token and (kept) session: {jar:?}");
    let token = token_of(&h);
    let session = jar.iter().find(|c| c.starts_with("session_id=")).unwrap().clone();
    let both = format!("{session}; csrftoken={token}");
    let ok = [("cookie", both.as_str()), ("x-csrf-token", token.as_str())];
    assert_eq!(
        send(&app, Method::POST, "/form", &ok, "", false).await.0,
        StatusCode::OK
    );
    // Replay across sessions: the token with another session's cookie is refused.
    let (_, h2, _) = send(&app, Method::GET, "/form", &[], "", false).await;
    let other = cookies(&h2).into_iter().find(|c| c.starts_with("session_id=")).unwrap();
    let mixed = format!("{other}; csrftoken={token}");
    let hs = [("cookie", mixed.as_str()), ("x-csrf-token", token.as_str())];
    assert_eq!(
        send(&app, Method::POST, "/form", &hs, "", false).await.0,
        StatusCode::FORBIDDEN
    );
    // Login rotates the session id and the token with it.
    let (s, h, _) = send(&app, Method::POST, "/login", &ok, "", false).await;
    assert_eq!(s, StatusCode::OK);
    let new_token = token_of(&h);
    assert_ne!(new_token, token);
    let new_session = cookies(&h).into_iter().find(|c| c.starts_with("session_id=")).unwrap();
    let jar = format!("{new_session}; csrftoken={new_token}");
    let hs = [("cookie", jar.as_str()), ("x-csrf-token", new_token.as_str())];
    assert_eq!(
        send(&app, Method::POST, "/form", &hs, "", false).await.0,
        StatusCode::OK
    );
    // The pre-login token no longer works with the new session.
    let stale = format!("{new_session}; csrftoken={token}");
    let hs = [("cookie", stale.as_str()), ("x-csrf-token", token.as_str())];
    assert_eq!(
        send(&app, Method::POST, "/form", &hs, "", false).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn https_requests_need_a_trusted_origin_or_referer() {
    let app = app(false, vec!["https://admin.example".into()]);
    // Plain HTTP from an untrusted peer claiming HTTPS changes nothing: no Origin check.
    let untrusted = {
        let (_, h, _) = send(&app, Method::GET, "/form", &[], "", false).await;
        token_of(&h)
    };
    let req = Request::post("/form")
        .header("host", "app.example")
        .header("x-forwarded-proto", "https")
        .header("cookie", format!("csrftoken={untrusted}"))
        .header("x-csrf-token", &untrusted)
        .body(RequestBody::empty())
        .unwrap();
    let resp = app.oneshot(req, Some(([192, 0, 2, 9], 4000).into())).await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "an untrusted peer's X-Forwarded-Proto is ignored"
    );
    let (_, h, _) = send(&app, Method::GET, "/form", &[], "", true).await;
    assert!(
        h["set-cookie"].to_str().unwrap().contains("Secure"),
        "HTTPS: a Secure token cookie"
    );
    let token = token_of(&h);
    let cookie = format!("csrftoken={token}");
    let with = |extra: Vec<(&'static str, &'static str)>| {
        let mut v = vec![("cookie", cookie.clone()), ("x-csrf-token", token.clone())];
        v.extend(extra.into_iter().map(|(k, v)| (k, v.to_owned())));
        v
    };
    for (extra, want) in [
        (vec![("origin", "https://app.example")], StatusCode::OK),
        (vec![("origin", "https://admin.example")], StatusCode::OK),
        (vec![("referer", "https://app.example/page?x=1")], StatusCode::OK),
        (vec![("origin", "https://evil.example")], StatusCode::FORBIDDEN),
        (vec![("origin", "http://app.example")], StatusCode::FORBIDDEN),
        (vec![("referer", "https://evil.example/")], StatusCode::FORBIDDEN),
        (vec![], StatusCode::FORBIDDEN),
    ] {
        let hs = with(extra.clone());
        let hs: Vec<(&str, &str)> = hs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            send(&app, Method::POST, "/form", &hs, "", true).await.0,
            want,
            "{extra:?}"
        );
    }
}
