#![allow(clippy::field_reassign_with_default)] // tests build configs step by step
//! In-process tests of the issue-11 layers through the whole stack (`App::oneshot`).

use std::sync::Arc;

use bytes::Bytes;
use cello_config::{ApiKeyConfig, BasicAuthConfig, JwtConfig, RateLimitConfig, Secret, ServerConfig};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use super::Identity;
use crate::body::{RequestBody, ResponseBody};
use crate::endpoint::RoutedRequest;
use crate::{App, Server, Target};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn who() -> Target {
    Target::Endpoint(Arc::new(|req: RoutedRequest| async move {
        let user = req.parts.extensions.get::<Identity>().map(|i| i.0.to_string());
        Response::new(ResponseBody::full(user.unwrap_or_else(|| "anonymous".into())))
    }))
}

fn app(config: ServerConfig) -> App {
    let mut b = Server::builder(config);
    b.route(&[Method::GET], "/me", who()).unwrap();
    b.route(&[Method::GET], "/open", who()).unwrap();
    b.build().unwrap()
}

async fn call(app: &App, path: &str, headers: &[(&str, &str)]) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::get(path).header("host", "t");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app
        .oneshot(
            req.body(RequestBody::empty()).unwrap(),
            Some(([10, 0, 0, 1], 4000).into()),
        )
        .await;
    let (parts, body) = resp.into_parts();
    (parts.status, parts.headers, body.collect().await.unwrap().to_bytes())
}

fn token(claims: serde_json::Value, alg: jsonwebtoken::Algorithm, key: &[u8]) -> String {
    let head = jsonwebtoken::Header::new(alg);
    jsonwebtoken::encode(&head, &claims, &jsonwebtoken::EncodingKey::from_secret(key)).unwrap()
}

#[tokio::test]
async fn jwt_gate_checks_tokens_and_skips_probes_and_excluded_paths() {
    let mut config = ServerConfig::default();
    config.health.enabled = true;
    config.jwt = Some(JwtConfig {
        secret: Secret(SECRET.into()),
        exclude_paths: vec!["/open".into()],
        ..JwtConfig::default()
    });
    let app = app(config);
    assert!(crate::stack::describe(app.state()).contains(&"jwt"));

    let (status, headers, body) = call(&app, "/me", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["content-type"], "application/problem+json");
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer error="));
    assert!(String::from_utf8_lossy(&body).contains("\"status\":401"));

    let good = token(
        serde_json::json!({"sub": "a"}),
        jsonwebtoken::Algorithm::HS256,
        SECRET.as_bytes(),
    );
    let (status, _, body) = call(&app, "/me", &[("authorization", &format!("Bearer {good}"))]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(&body[..], br#"{"sub":"a"}"#);

    let other_alg = token(
        serde_json::json!({"sub": "a"}),
        jsonwebtoken::Algorithm::HS384,
        SECRET.as_bytes(),
    );
    let (status, headers, _) = call(&app, "/me", &[("authorization", &format!("Bearer {other_alg}"))]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"].to_str().unwrap().contains("invalid_token"));

    assert_eq!(call(&app, "/open", &[]).await.0, StatusCode::OK);
    assert_eq!(call(&app, "/health/live", &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn api_key_and_basic_gates() {
    let mut config = ServerConfig::default();
    config.api_key = Some(ApiKeyConfig {
        keys: [("k1".to_owned(), serde_json::json!({"sub": "svc"}))].into(),
        ..ApiKeyConfig::default()
    });
    let app1 = app(config);
    assert_eq!(call(&app1, "/me", &[]).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        call(&app1, "/me", &[("x-api-key", "k2")]).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, _, body) = call(&app1, "/me", &[("x-api-key", "k1")]).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &br#"{"sub":"svc"}"#[..]));

    let mut config = ServerConfig::default();
    config.basic_auth = Some(BasicAuthConfig {
        users: [("u".to_owned(), Secret(b"p".to_vec()))].into(),
        ..BasicAuthConfig::default()
    });
    let app2 = app(config);
    let (status, headers, _) = call(&app2, "/me", &[("authorization", "Basic dTp4")]).await; // u:x
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Basic realm=\"cello\""));
    let (status, _, body) = call(&app2, "/me", &[("authorization", "Basic dTpw")]).await; // u:p
    assert_eq!((status, &body[..]), (StatusCode::OK, &br#"{"username":"u"}"#[..]));
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_before_the_router() {
    let mut config = ServerConfig::default();
    config.rate_limit = Some(RateLimitConfig {
        capacity: 2,
        refill_rate: 0.001,
        ..RateLimitConfig::default()
    });
    let app = app(config);
    for _ in 0..2 {
        let (status, headers, _) = call(&app, "/me", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["ratelimit-limit"], "2");
    }
    let (status, headers, body) = call(&app, "/me", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert!(String::from_utf8_lossy(&body).contains("\"status\":429"));
}

#[tokio::test]
async fn rate_limit_keys_by_user_credential_and_by_route() {
    // key_by="user": each credential has its own bucket (the limit runs before the gates,
    // so the user is known by the credential presented).
    let mut config = ServerConfig::default();
    config.rate_limit = Some(RateLimitConfig {
        capacity: 1,
        refill_rate: 0.001,
        key_by: "user".into(),
        ..RateLimitConfig::default()
    });
    let app1 = app(config);
    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    assert_eq!(call(&app1, "/me", &alice).await.0, StatusCode::OK);
    assert_eq!(call(&app1, "/me", &alice).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call(&app1, "/me", &bob).await.0,
        StatusCode::OK,
        "another user, another bucket"
    );
    // key_by="route": one bucket per route template, whoever asks.
    let mut config = ServerConfig::default();
    config.rate_limit = Some(RateLimitConfig {
        capacity: 1,
        refill_rate: 0.001,
        key_by: "route".into(),
        ..RateLimitConfig::default()
    });
    let app2 = app(config);
    assert_eq!(call(&app2, "/me", &alice).await.0, StatusCode::OK);
    assert_eq!(call(&app2, "/me", &bob).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        call(&app2, "/open", &bob).await.0,
        StatusCode::OK,
        "another route, another bucket"
    );
}
