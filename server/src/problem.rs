//! RFC 7807 `application/problem+json` responses for every framework error.

use http::{header, HeaderValue, Response, StatusCode};
use serde::Serialize;

use crate::body::ResponseBody;

/// Content type of every framework error.
pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    type_: &'a str,
    title: &'a str,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<&'a str>,
}

/// Serialise a problem document.
pub fn problem_body(status: StatusCode, detail: Option<&str>, instance: Option<&str>) -> Vec<u8> {
    let p = Problem {
        type_: "about:blank",
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail,
        instance,
    };
    serde_json::to_vec(&p).unwrap_or_else(|_| b"{}".to_vec())
}

/// A complete problem+json response.
pub fn problem(status: StatusCode, detail: impl AsRef<str>) -> Response<ResponseBody> {
    let body = problem_body(status, Some(detail.as_ref()), None);
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let b = problem_body(StatusCode::NOT_FOUND, Some("no route for GET /x"), None);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["status"], 404);
        assert_eq!(v["title"], "Not Found");
        assert_eq!(v["type"], "about:blank");
        assert_eq!(v["detail"], "no route for GET /x");
        assert!(v.get("instance").is_none());
    }
}
