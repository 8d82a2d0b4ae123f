//! Who gets in (issue 11): JWT, API keys and Basic auth as gates of the one stack.
//!
//! Each gate looks at the request head only, answers its own rejections (401
//! problem+json with a `WWW-Authenticate` challenge) without reaching Python, and puts
//! the authenticated identity into the [`Identity`] extension, which the Python request
//! exposes as `request.context["user"]`. The built-in probes are answered before any gate.

pub mod api_key;
pub mod basic;
pub mod jwt;

use std::sync::Arc;

use http::{header, HeaderValue, StatusCode};

use crate::ext::RootPrefix;
use crate::problem::problem;
use crate::stack::{Req, Resp};

/// The authenticated user: JWT claims, an API key's identity, `{"username": ...}` for Basic.
#[derive(Clone, Debug)]
pub struct Identity(pub Arc<serde_json::Value>);

/// Basic credentials a Python `verify(user, password)` callable still has to accept.
#[derive(Clone, Debug)]
pub struct PendingBasic {
    /// User name from the header.
    pub user: String,
    /// Password from the header.
    pub password: String,
    /// Realm for the challenge Python answers with.
    pub realm: Arc<str>,
}

/// Paths a gate never checks: exact paths, or prefixes written `"/public/*"`.
#[derive(Clone, Debug, Default)]
pub struct PathSet {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl PathSet {
    /// From the config's `exclude_paths` list.
    pub fn new(paths: &[String]) -> Self {
        let mut set = Self::default();
        for p in paths {
            match p.strip_suffix('*') {
                Some(prefix) => set.prefixes.push(prefix.to_owned()),
                None => set.exact.push(p.clone()),
            }
        }
        set
    }

    /// `path` (without the app's `root_path`) is excluded.
    pub fn contains(&self, path: &str) -> bool {
        self.exact.iter().any(|e| e == path) || self.prefixes.iter().any(|p| path.starts_with(p.as_str()))
    }
}

/// The request path the router sees (the `root_path` prefix removed).
pub fn app_path(req: &Req) -> &str {
    let path = req.uri().path();
    match req.extensions().get::<RootPrefix>() {
        Some(RootPrefix(n)) => path.get(*n..).filter(|p| !p.is_empty()).unwrap_or("/"),
        None => path,
    }
}

/// A 401 problem+json with its challenge.
pub fn unauthorized(challenge: String, detail: &str) -> Resp {
    let mut resp = problem(StatusCode::UNAUTHORIZED, detail);
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// Compare secrets in constant time: both sides are hashed first, so neither the
/// position of the first difference nor the lengths show in the timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use ring::digest::{digest, SHA256};
    use subtle::ConstantTimeEq;
    // Hashing first makes both inputs 32 bytes: no early exit on length.
    let (ha, hb) = (digest(&SHA256, a), digest(&SHA256, b));
    ha.as_ref().ct_eq(hb.as_ref()).into()
}

/// Outcome of a gate's look at a request.
pub enum Verdict {
    /// Let it through.
    Pass,
    /// Answer this instead (never reaches the router).
    Reject(Resp),
}

/// A check done on the request head before routing (JWT, API key, Basic).
pub trait Gate: Send + Sync + 'static {
    /// Look at (and possibly annotate) the request.
    fn check(&self, req: &mut Req) -> Verdict;
}

/// The gates the config enables, built once (keys parsed, files read).
#[derive(Default)]
pub struct Gates {
    /// JWT verification.
    pub jwt: Option<Arc<dyn Gate>>,
    /// API keys.
    pub api_key: Option<Arc<dyn Gate>>,
    /// Basic auth.
    pub basic: Option<Arc<dyn Gate>>,
}

impl Gates {
    /// Build from the validated config.
    pub fn build(config: &cello_config::ServerConfig) -> crate::Result<Self> {
        Ok(Self {
            jwt: match &config.jwt {
                Some(c) => Some(Arc::new(jwt::JwtGate::new(c)?)),
                None => None,
            },
            api_key: config
                .api_key
                .as_ref()
                .map(|c| Arc::new(api_key::ApiKeyGate::new(c)) as Arc<dyn Gate>),
            basic: config
                .basic_auth
                .as_ref()
                .map(|c| Arc::new(basic::BasicGate::new(c)) as Arc<dyn Gate>),
        })
    }
}

// ---- the layer -----------------------------------------------------------------------

/// One gate as a layer of the stack.
pub struct GateLayer(pub Arc<dyn Gate>);

impl<S> tower::Layer<S> for GateLayer {
    type Service = GateService<S>;
    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            gate: self.0.clone(),
        }
    }
}

/// See [`GateLayer`].
#[derive(Clone)]
pub struct GateService<S> {
    inner: S,
    gate: Arc<dyn Gate>,
}

type Ready = futures_util::future::Ready<Result<Resp, std::convert::Infallible>>;

impl<S> tower::Service<Req> for GateService<S>
where
    S: tower::Service<Req, Response = Resp, Error = std::convert::Infallible>,
{
    type Response = Resp;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<Ready, S::Future>;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, mut req: Req) -> Self::Future {
        use futures_util::future::Either;
        match self.gate.check(&mut req) {
            Verdict::Pass => Either::Right(self.inner.call(req)),
            Verdict::Reject(resp) => Either::Left(futures_util::future::ready(Ok(resp))),
        }
    }
}

#[cfg(test)]
mod tests;
