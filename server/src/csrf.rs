//! CSRF protection (issue 11), the `csrf` layer: double-submit tokens signed with
//! HMAC-SHA256, bound to the session id when sessions are on.
//!
//! A token is `nonce.mac`, `mac = HMAC-SHA256(key, nonce ‖ 0 ‖ session id)`. Safe methods
//! pass and get a token cookie when they have no valid one (the first safe response sets
//! it); an unsafe request needs a valid token cookie and the same token in the header or
//! the form field (urlencoded or multipart), else 403. Over HTTPS its `Origin` (or, without
//! one, `Referer`) must be the request's own origin or one of `trusted_origins`. A token
//! made for one session fails in any other, and a rotated session (login) gets a new one.

use std::convert::Infallible;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use ring::hmac;

use crate::auth::PathSet;
use crate::body::RequestBody;
use crate::ext::{ClientInfo, ConnInfo};
use crate::problem::problem;
use crate::session::SessionHandle;
use crate::stack::{Req, Resp};
use crate::target::BoxFuture;

/// The token of this request (request extension): `request.csrf_token()`.
#[derive(Clone, Debug)]
pub struct CsrfToken(pub Arc<str>);

/// The CSRF layer's settings, built once.
pub struct Csrf {
    key: hmac::Key,
    config: cello_config::CsrfConfig,
    exempt: PathSet,
    header: http::HeaderName,
    max_body: u64,
    read_body: std::time::Duration,
}

impl Csrf {
    /// Build from the validated config (the key: `secret`, else `CELLO_SECRET_KEY`).
    pub fn new(server: &cello_config::ServerConfig, config: &cello_config::CsrfConfig) -> crate::Result<Self> {
        let secret = crate::keys::resolve(config.secret.as_ref(), "csrf.secret")?;
        let header = http::HeaderName::from_bytes(config.header_name.as_bytes()).map_err(|_| {
            crate::Error::Config(cello_config::Error::Invalid {
                field: "csrf.header_name".into(),
                reason: format!("invalid header name {:?}", config.header_name),
            })
        })?;
        Ok(Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            exempt: PathSet::new(&config.exempt_paths),
            config: config.clone(),
            header,
            max_body: server.limits.max_body_size,
            read_body: std::time::Duration::from_secs_f64(server.timeouts.read_body.max(1.0)),
        })
    }

    fn mac_input(nonce: &[u8], binding: &str) -> Vec<u8> {
        let mut msg = Vec::with_capacity(nonce.len() + 1 + binding.len());
        msg.extend_from_slice(nonce);
        msg.push(0);
        msg.extend_from_slice(binding.as_bytes());
        msg
    }

    /// A fresh token for `binding` (the session id, or empty).
    pub fn mint(&self, binding: &str) -> String {
        let nonce = crate::keys::random_bytes(16);
        let tag = hmac::sign(&self.key, &Self::mac_input(&nonce, binding));
        format!("{}.{}", B64.encode(&nonce), B64.encode(tag.as_ref()))
    }

    /// `token` was made here for `binding` (the MAC check is constant-time).
    pub fn verify(&self, token: &str, binding: &str) -> bool {
        let Some((n, t)) = token.split_once('.') else {
            return false;
        };
        let (Ok(nonce), Ok(tag)) = (B64.decode(n), B64.decode(t)) else {
            return false;
        };
        nonce.len() == 16 && hmac::verify(&self.key, &Self::mac_input(&nonce, binding), &tag).is_ok()
    }

    fn cookie_token<'a>(&self, req: &'a Req) -> Option<&'a str> {
        let name = self.config.cookie_name.as_str();
        req.headers()
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim_matches('"'))
    }

    fn set_cookie(&self, resp: &mut Resp, token: &str, secure: bool) {
        // Readable by scripts on purpose (they copy it into the header); SameSite=Lax.
        let mut v = format!("{}={token}; Path=/; SameSite=Lax", self.config.cookie_name);
        if secure {
            v.push_str("; Secure");
        }
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
}

fn is_safe(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE)
}

/// HTTPS as the client used it (a trusted proxy's word, else the connection).
fn is_https(req: &Req) -> bool {
    if let Some(c) = req.extensions().get::<ClientInfo>() {
        if let Some(s) = c.scheme {
            return s == "https";
        }
    }
    req.extensions().get::<ConnInfo>().is_some_and(|c| c.tls) || req.uri().scheme_str() == Some("https")
}

/// `https://host[:port]` the client asked for.
fn own_origin(req: &Req) -> Option<String> {
    let host = req
        .extensions()
        .get::<ClientInfo>()
        .and_then(|c| c.host.clone())
        .or_else(|| req.headers().get(header::HOST)?.to_str().ok().map(str::to_owned))
        .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()))?;
    Some(format!("https://{}", host.to_ascii_lowercase()))
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

impl Csrf {
    /// The `Origin`/`Referer` check of an unsafe HTTPS request.
    fn origin_ok(&self, req: &Req) -> Result<(), &'static str> {
        let header_origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok())
            .filter(|o| *o != "null");
        let seen = match header_origin {
            Some(o) => origin_of(o).ok_or("the Origin header is not a valid origin")?,
            None => {
                let referer = req
                    .headers()
                    .get(header::REFERER)
                    .and_then(|v| v.to_str().ok())
                    .ok_or("an HTTPS request without Origin or Referer is refused")?;
                origin_of(referer).ok_or("the Referer header is not a valid URL")?
            }
        };
        let trusted = own_origin(req).is_some_and(|own| own == seen)
            || self
                .config
                .trusted_origins
                .iter()
                .any(|t| t.trim_end_matches('/').eq_ignore_ascii_case(&seen));
        if trusted {
            Ok(())
        } else {
            Err("the request's Origin/Referer is not a trusted origin")
        }
    }

    /// The form field's value, reading (and keeping) a urlencoded or multipart body.
    async fn form_token(&self, req: &mut Req) -> Result<Option<String>, Resp> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if mime != "application/x-www-form-urlencoded" && mime != "multipart/form-data" {
            return Ok(None);
        }
        let body = std::mem::replace(req.body_mut(), RequestBody::empty());
        let limited = http_body_util::Limited::new(body, self.max_body as usize);
        let bytes: Bytes = match tokio::time::timeout(self.read_body, limited.collect()).await {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(problem(StatusCode::PAYLOAD_TOO_LARGE, "the request body is too large"))
            }
            Ok(Err(_)) => return Err(problem(StatusCode::BAD_REQUEST, "the request body could not be read")),
            Err(_) => {
                return Err(problem(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body was not received in time",
                ))
            }
        };
        *req.body_mut() = RequestBody::full(bytes.clone());
        let field = self.config.form_field.as_str();
        if mime == "application/x-www-form-urlencoded" {
            return Ok(form_urlencoded::parse(&bytes)
                .find(|(k, _)| k == field)
                .map(|(_, v)| v.into_owned()));
        }
        let Ok(boundary) = multer::parse_boundary(&ct) else {
            return Ok(None);
        };
        let stream = futures_util::stream::once(async move { Ok::<_, Infallible>(bytes) });
        let mut mp = multer::Multipart::new(stream, boundary);
        while let Ok(Some(f)) = mp.next_field().await {
            if f.name() == Some(field) && f.file_name().is_none() {
                return Ok(f.text().await.ok());
            }
        }
        Ok(None)
    }
}

fn forbidden(detail: &str) -> Resp {
    problem(StatusCode::FORBIDDEN, format!("CSRF check failed: {detail}"))
}

/// The CSRF layer.
pub struct CsrfLayer(pub Arc<Csrf>);

impl<S> tower::Layer<S> for CsrfLayer {
    type Service = CsrfService<S>;
    fn layer(&self, inner: S) -> CsrfService<S> {
        CsrfService {
            inner,
            csrf: self.0.clone(),
        }
    }
}

/// See [`CsrfLayer`].
#[derive(Clone)]
pub struct CsrfService<S> {
    inner: S,
    csrf: Arc<Csrf>,
}

impl<S> tower::Service<Req> for CsrfService<S>
where
    S: tower::Service<Req, Response = Resp, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = BoxFuture;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> BoxFuture {
        let csrf = self.csrf.clone();
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            if csrf.exempt.contains(crate::auth::app_path(&req)) {
                return tower::Service::call(&mut inner, req).await;
            }
            let session = req.extensions().get::<SessionHandle>().cloned();
            let binding = session.as_ref().map(|s| s.0.id()).unwrap_or_default();
            let cookie = csrf
                .cookie_token(&req)
                .filter(|t| csrf.verify(t, &binding))
                .map(str::to_owned);
            let secure = is_https(&req);
            if !is_safe(req.method()) {
                if secure {
                    if let Err(why) = csrf.origin_ok(&req) {
                        return Ok(forbidden(why));
                    }
                }
                let Some(expected) = cookie.as_deref() else {
                    return Ok(forbidden("the CSRF cookie is missing or not valid for this session"));
                };
                let sent = match req.headers().get(&csrf.header).and_then(|v| v.to_str().ok()) {
                    Some(v) => Some(v.trim().to_owned()),
                    None => match csrf.form_token(&mut req).await {
                        Ok(v) => v,
                        Err(resp) => return Ok(resp),
                    },
                };
                let Some(sent) = sent else {
                    return Ok(forbidden("the CSRF token is missing (header or form field)"));
                };
                if !crate::auth::constant_time_eq(sent.as_bytes(), expected.as_bytes()) {
                    return Ok(forbidden("the CSRF token does not match"));
                }
            }
            let (token, fresh) = match cookie {
                Some(t) => (t, false),
                None => (csrf.mint(&binding), true),
            };
            if fresh {
                // The token is bound to this session's id: the session must be kept.
                if let Some(s) = &session {
                    s.0.keep();
                }
            }
            req.extensions_mut().insert(CsrfToken(token.as_str().into()));
            let mut resp = tower::Service::call(&mut inner, req).await?;
            // Login rotated the session id: the old token no longer verifies, send a new one.
            let now = session.as_ref().map(|s| s.0.id()).unwrap_or_default();
            if now != binding {
                let t = csrf.mint(&now);
                csrf.set_cookie(&mut resp, &t, secure);
                if let Some(s) = &session {
                    s.0.keep();
                }
            } else if fresh {
                csrf.set_cookie(&mut resp, &token, secure);
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests;
