#![allow(clippy::field_reassign_with_default)] // tests build configs step by step
//! In-process tests of the session layer through the whole stack (`App::oneshot`).

use std::sync::Arc;

use bytes::Bytes;
use cello_config::{Secret, ServerConfig, SessionConfig};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::SessionHandle;
use crate::body::{RequestBody, ResponseBody};
use crate::endpoint::RoutedRequest;
use crate::{App, Server, Target};

const SECRET: &str = "0123456789abcdef0123456789abcdef-session";

/// `/show` echoes the data; `/set?k=v` stores it; `/rotate` regenerates; `/logout` clears.
fn endpoint() -> Target {
    Target::Endpoint(Arc::new(|req: RoutedRequest| async move {
        let slot = req.parts.extensions.get::<SessionHandle>().unwrap().0.clone();
        let path = req.parts.uri.path().to_owned();
        let query = req.parts.uri.query().unwrap_or("").to_owned();
        let body = match path.as_str() {
            "/set" => {
                let (k, v) = query.split_once('=').unwrap();
                let mut data: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(&slot.data_json()).unwrap();
                data.insert(k.into(), v.into());
                match slot.store_json(&serde_json::to_vec(&data).unwrap()) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => e,
                }
            }
            "/rotate" => {
                slot.regenerate();
                "rotated".into()
            }
            "/logout" => {
                slot.clear();
                "bye".into()
            }
            _ => String::from_utf8(slot.data_json()).unwrap(),
        };
        Response::new(ResponseBody::full(body))
    }))
}

fn app(store: &str) -> App {
    let mut c = ServerConfig::default();
    c.session = Some(SessionConfig {
        secret: Some(Secret(SECRET.into())),
        store: store.into(),
        ..SessionConfig::default()
    });
    let mut b = Server::builder(c);
    for p in ["/show", "/set", "/rotate", "/logout"] {
        b.route(&[Method::GET, Method::POST], p, endpoint()).unwrap();
    }
    b.build().unwrap()
}

async fn get(app: &App, uri: &str, cookie: Option<&str>) -> (StatusCode, Option<String>, Bytes) {
    let mut req = Request::get(uri).header("host", "t");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let resp = app
        .oneshot(
            req.body(RequestBody::empty()).unwrap(),
            Some(([10, 0, 0, 1], 4000).into()),
        )
        .await;
    let (parts, body) = resp.into_parts();
    let set = parts.headers.get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    (parts.status, set, body.collect().await.unwrap().to_bytes())
}

/// `name=value` of a `Set-Cookie`.
fn pair(set: &str) -> String {
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn cookie_store_round_trips_with_secure_defaults_and_saves_only_changes() {
    let app = app("cookie");
    assert_eq!(app.layers(), ["connection", "session", "protocol", "router"]);
    // Nothing changed: no cookie.
    let (s, set, body) = get(&app, "/show", None).await;
    assert_eq!((s, set, &body[..]), (StatusCode::OK, None, &b"{}"[..]));
    let (_, set, _) = get(&app, "/set?user=ann", None).await;
    let set = set.expect("a changed session is saved");
    for attr in ["HttpOnly", "Secure", "SameSite=Lax", "Max-Age=86400", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    let cookie = pair(&set);
    assert!(cookie.starts_with("session_id="));
    assert!(!cookie.contains("ann"), "the cookie store encrypts: {cookie}");
    let (_, again, body) = get(&app, "/show", Some(&cookie)).await;
    assert_eq!(&body[..], br#"{"user":"ann"}"#);
    assert!(again.is_none(), "an unchanged session is not re-sent");
}

#[tokio::test]
async fn forged_edited_or_foreign_cookies_are_an_empty_session() {
    let app = app("cookie");
    let (_, set, _) = get(&app, "/set?role=user", None).await;
    let cookie = pair(&set.unwrap());
    let (name, value) = cookie.split_once('=').unwrap();
    // Flip one character in the middle of the ciphertext.
    let mut bytes = value.as_bytes().to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    let edited = format!("{name}={}", String::from_utf8(bytes).unwrap());
    for bad in [edited.as_str(), "session_id=garbage", "session_id=", "session_id=%%%"] {
        let (s, _, body) = get(&app, "/show", Some(bad)).await;
        assert_eq!((s, &body[..]), (StatusCode::OK, &b"{}"[..]), "{bad}");
    }
    // A cookie made with another secret is foreign.
    let other = {
        let mut c = ServerConfig::default();
        c.session = Some(SessionConfig {
            secret: Some(Secret("another-secret-another-secret-another".into())),
            ..SessionConfig::default()
        });
        let mut b = Server::builder(c);
        b.route(&[Method::GET], "/show", endpoint()).unwrap();
        b.build().unwrap()
    };
    let (_, _, body) = get(&other, "/show", Some(&cookie)).await;
    assert_eq!(&body[..], b"{}");
}

#[tokio::test]
async fn the_cookie_store_refuses_data_over_4_kb_with_a_clear_error() {
    let app = app("cookie");
    let big = "x".repeat(5000);
    let (_, set, body) = get(&app, &format!("/set?blob={big}"), None).await;
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("too large for the cookie store"), "{text}");
    assert!(set.is_none());
    // Just under the budget still fits in 4096 bytes.
    let fits = "y".repeat(2800);
    let (_, set, _) = get(&app, &format!("/set?blob={fits}"), None).await;
    assert!(set.unwrap().len() <= 4096);
}

#[tokio::test]
async fn memory_store_keeps_an_opaque_signed_id_and_forgets_rotated_and_cleared_ids() {
    let app = app("memory");
    let (_, set, _) = get(&app, "/set?user=bob", None).await;
    let first = pair(&set.unwrap());
    assert!(!first.contains("bob"));
    let (_, _, body) = get(&app, "/show", Some(&first)).await;
    assert_eq!(&body[..], br#"{"user":"bob"}"#);
    // Login: a new id; the old cookie no longer finds the data.
    let (_, set, _) = get(&app, "/rotate", Some(&first)).await;
    let second = pair(&set.unwrap());
    assert_ne!(first, second);
    assert_eq!(&get(&app, "/show", Some(&first)).await.2[..], b"{}");
    assert_eq!(&get(&app, "/show", Some(&second)).await.2[..], br#"{"user":"bob"}"#);
    // Logout deletes the cookie and the record: replaying it gives an empty session.
    let (_, set, _) = get(&app, "/logout", Some(&second)).await;
    assert!(set.unwrap().contains("Max-Age=0"));
    assert_eq!(&get(&app, "/show", Some(&second)).await.2[..], b"{}");
    // An unsigned id is never looked up.
    let (_, _, body) = get(
        &app,
        "/show",
        Some("session_id=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    )
    .await;
    assert_eq!(&body[..], b"{}");
}

#[tokio::test]
async fn expired_cookie_store_sessions_are_empty() {
    let mut c = ServerConfig::default();
    c.session = Some(SessionConfig {
        secret: Some(Secret(SECRET.into())),
        max_age: Some(1),
        ..SessionConfig::default()
    });
    let mut b = Server::builder(c);
    b.route(&[Method::GET], "/set", endpoint()).unwrap();
    b.route(&[Method::GET], "/show", endpoint()).unwrap();
    let app = b.build().unwrap();
    let (_, set, _) = get(&app, "/set?a=1", None).await;
    let cookie = pair(&set.unwrap());
    assert_eq!(&get(&app, "/show", Some(&cookie)).await.2[..], br#"{"a":"1"}"#);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if &get(&app, "/show", Some(&cookie)).await.2[..] == b"{}" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the session never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[test]
fn production_without_a_secret_is_a_startup_error() {
    // Only this test touches these variables in this process's test binary.
    std::env::remove_var("CELLO_SECRET_KEY");
    std::env::set_var("CELLO_ENV", "production");
    let err = crate::keys::resolve(None, "session.secret").unwrap_err();
    std::env::remove_var("CELLO_ENV");
    assert!(err.to_string().contains("CELLO_SECRET_KEY"), "{err}");
    // Development: a random key (the same one for the whole process).
    let a = crate::keys::resolve(None, "session.secret").unwrap();
    let b = crate::keys::resolve(None, "csrf.secret").unwrap();
    assert_eq!((a.len(), &a), (32, &b));
}
