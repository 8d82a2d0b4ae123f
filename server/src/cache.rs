//! The response cache layer (`cache`): moka in memory, per worker.
//!
//! Key: method, path and query, the values of the request headers the response named in
//! `Vary`, and the `Authorization` value when there is one. Stored: complete buffered
//! responses, and the sidecar's proxied answers once they have streamed through (200, 203,
//! 301, 308, 410) without `Set-Cookie`, `Cache-Control:
//! private/no-store/no-cache` or `Vary: *`, at most `maxEntryBytes`. A request with
//! `Authorization` is stored only when the response says `Cache-Control: public` (keyed on
//! that Authorization value, so it is never served to another caller). A response's
//! `s-maxage`/`max-age` overrides the TTL. Hits carry `Age` and `X-Cache: HIT` and never
//! reach the router; eligible misses carry `X-Cache: MISS`.
//!
//! Memory is bounded twice: moka's capacity is `maxBytes` and every entry weighs at least
//! `maxBytes / maxEntries`, so there are never more than `maxEntries` entries.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cello_config::CacheConfig;
use futures_util::future::{Either, Ready};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode};
use tower::{Layer, Service};

use crate::body::ResponseBody;
use crate::ext::{MatchedRoute, Upstream};
use crate::middleware::security::CspNonce;
use crate::stack::{Post, Req, Resp, Then};

const X_CACHE: HeaderName = HeaderName::from_static("x-cache");
const CACHEABLE: [u16; 5] = [200, 203, 301, 308, 410];

#[derive(Clone, PartialEq, Eq, Hash)]
struct Primary {
    method: Method,
    target: Arc<str>,
    auth: Option<HeaderValue>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    primary: Primary,
    vary: Vec<Option<HeaderValue>>,
}

struct Entry {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    stored: Instant,
    ttl: Duration,
    tags: Arc<[String]>,
    weight: u32,
}

struct PerEntryTtl;

impl moka::Expiry<Key, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(&self, _: &Key, e: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(e.ttl)
    }
}

/// Per-route settings from `@cache(ttl=..., tags=...)`.
struct RouteRule {
    ttl: Option<Duration>,
    tags: Arc<[String]>,
}

/// The cache of one server.
pub struct ResponseCache {
    config: CacheConfig,
    methods: Vec<Method>,
    routes: HashMap<String, RouteRule>,
    store: moka::sync::Cache<Key, Arc<Entry>>,
    /// The `Vary` header names last seen for a primary key.
    vary: moka::sync::Cache<Primary, Arc<[HeaderName]>>,
    min_weight: u32,
    /// Entries inserted and not yet removed (never fewer than `store` holds: counted up
    /// before each insert, down by the eviction listener). While it is 0 a request skips
    /// both lookups: a cache that holds nothing costs no hashing.
    held: Arc<std::sync::atomic::AtomicU64>,
}

impl ResponseCache {
    /// Build from a validated config.
    pub fn new(config: CacheConfig) -> Self {
        let min_weight = u32::try_from((config.max_bytes / config.max_entries).max(1)).unwrap_or(u32::MAX);
        let held = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let gone = held.clone();
        let store = moka::sync::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|_: &Key, e: &Arc<Entry>| e.weight)
            .expire_after(PerEntryTtl)
            .support_invalidation_closures()
            .eviction_listener(move |_, _, _| {
                gone.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            })
            .build();
        let vary = moka::sync::Cache::builder().max_capacity(config.max_entries).build();
        let methods = config
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .collect();
        let routes = config
            .routes
            .iter()
            .map(|r| {
                let rule = RouteRule {
                    ttl: r.ttl.map(Duration::from_secs),
                    tags: r.tags.clone().into(),
                };
                (r.template.clone(), rule)
            })
            .collect();
        Self {
            methods,
            routes,
            store,
            vary,
            min_weight,
            held,
            config,
        }
    }

    /// Drop every entry carrying one of `tags` (all entries when `tags` is empty);
    /// returns how many entries were present before.
    pub fn invalidate(&self, tags: &[String]) -> u64 {
        self.store.run_pending_tasks(); // entry_count is only exact after this
        let before = self.store.entry_count();
        if tags.is_empty() {
            self.store.invalidate_all();
        } else {
            let tags: Vec<String> = tags.to_vec();
            let _ = self
                .store
                .invalidate_entries_if(move |_, e| e.tags.iter().any(|t| tags.contains(t)));
        }
        self.store.run_pending_tasks();
        before
    }

    /// Entries stored now (after pending evictions).
    pub fn len(&self) -> u64 {
        self.store.run_pending_tasks();
        self.store.entry_count()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn eligible(&self, req: &Req) -> bool {
        if !self.methods.contains(req.method()) {
            return false;
        }
        let path = req.uri().path();
        !self
            .config
            .exclude_paths
            .iter()
            .any(|p| path == p || path.starts_with(&format!("{}/", p.trim_end_matches('/'))))
    }

    fn key(&self, primary: Primary, headers: &HeaderMap, names: &[HeaderName]) -> Key {
        let vary = names.iter().map(|n| headers.get(n).cloned()).collect();
        Key { primary, vary }
    }
}

/// The `Cache-Control` directives of `headers`, trimmed. Directive names are
/// case-insensitive: compare with [`is`] / [`value_of`] (no lower-cased copy per directive,
/// which cost two allocations on every request and response).
fn directives(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether directive `d` is `name` (case-insensitive).
fn is(d: &str, name: &str) -> bool {
    d.eq_ignore_ascii_case(name)
}

/// The value of directive `d` when it is `name=value` (name case-insensitive).
fn value_of<'a>(d: &'a str, name: &str) -> Option<&'a str> {
    let (n, value) = d.split_at_checked(name.len())?;
    if !n.eq_ignore_ascii_case(name) {
        return None;
    }
    value.strip_prefix('=')
}

fn max_age(headers: &HeaderMap) -> Option<u64> {
    let find = |name: &str| directives(headers).find_map(|d| value_of(d, name)?.trim_matches('"').parse::<u64>().ok());
    find("s-maxage").or_else(|| find("max-age"))
}

/// The cache layer.
pub struct CacheLayer(pub Arc<ResponseCache>);

impl<S> Layer<S> for CacheLayer {
    type Service = Cache<S>;
    fn layer(&self, inner: S) -> Cache<S> {
        Cache {
            inner,
            cache: self.0.clone(),
        }
    }
}

/// See [`CacheLayer`].
#[derive(Clone)]
pub struct Cache<S> {
    inner: S,
    cache: Arc<ResponseCache>,
}

/// What the miss path stores once the response is there.
pub struct CachePost {
    cache: Arc<ResponseCache>,
    primary: Primary,
    request_headers: HeaderMap,
    store: bool,
    /// This request's CSP nonce: a body that contains it is never stored, since a hit
    /// gets a fresh nonce in its header and the old one in the page would be refused.
    nonce: Option<Arc<str>>,
}

impl Post for CachePost {
    fn post(self, mut resp: Resp) -> Resp {
        let route = resp.extensions().get::<MatchedRoute>().map(|r| r.0.template.clone());
        let rule = route.as_deref().and_then(|t| self.cache.routes.get(t));
        if !self.cache.config.all_routes && rule.is_none() {
            return resp;
        }
        resp.headers_mut().insert(X_CACHE, HeaderValue::from_static("MISS"));
        if !self.store || !CACHEABLE.contains(&resp.status().as_u16()) {
            return resp;
        }
        let h = resp.headers();
        if h.contains_key(header::SET_COOKIE)
            || directives(h)
                .any(|d| is(d, "private") || is(d, "no-store") || is(d, "no-cache") || value_of(d, "private").is_some())
        {
            return resp;
        }
        if self.primary.auth.is_some() && !directives(h).any(|d| is(d, "public")) {
            return resp;
        }
        let mut names: Vec<HeaderName> = Vec::new();
        for v in h.get_all(header::VARY).iter() {
            let Ok(v) = v.to_str() else { return resp };
            for n in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match HeaderName::from_bytes(n.as_bytes()) {
                    Ok(name) if n != "*" => names.push(name),
                    _ => return resp, // `Vary: *` or garbage: never reusable
                }
            }
        }
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let ttl = match max_age(h) {
            Some(0) => return resp,
            Some(secs) => Duration::from_secs(secs),
            None => rule
                .and_then(|r| r.ttl)
                .unwrap_or(Duration::from_secs(self.cache.config.ttl)),
        };
        let mut headers = resp.headers().clone();
        headers.remove(X_CACHE);
        let names: Arc<[HeaderName]> = names.into();
        let pending = Pending {
            key: self.cache.key(self.primary.clone(), &self.request_headers, &names),
            cache: self.cache.clone(),
            primary: self.primary,
            names,
            status: resp.status(),
            headers,
            ttl,
            tags: rule.map_or_else(|| Arc::from(Vec::new()), |r| r.tags.clone()),
            nonce: self.nonce,
        };
        match resp.body() {
            ResponseBody::Empty | ResponseBody::Full(None) => pending.store(Bytes::new()),
            ResponseBody::Full(Some(b)) => pending.store(b.clone()),
            // A proxied answer streams through and is stored once complete.
            ResponseBody::Boxed(_) if resp.extensions().get::<Upstream>().is_some() => {
                let declared = resp
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
                if declared.is_none_or(|n| n <= self.cache.config.max_entry_bytes) {
                    let inner = std::mem::take(resp.body_mut());
                    *resp.body_mut() = ResponseBody::Boxed(http_body_util::combinators::BoxBody::new(Storing {
                        inner,
                        parts: Vec::new(),
                        size: 0,
                        limit: self.cache.config.max_entry_bytes,
                        pending: Some(pending),
                    }));
                }
            }
            _ => {} // other streams (generators, files): not stored
        }
        resp
    }
}

/// Everything needed to store an entry once its body is complete.
struct Pending {
    cache: Arc<ResponseCache>,
    key: Key,
    primary: Primary,
    names: Arc<[HeaderName]>,
    status: StatusCode,
    headers: HeaderMap,
    ttl: Duration,
    tags: Arc<[String]>,
    nonce: Option<Arc<str>>,
}

impl Pending {
    fn store(self, body: Bytes) {
        if body.len() as u64 > self.cache.config.max_entry_bytes {
            return;
        }
        if let Some(n) = self.nonce.as_deref().map(str::as_bytes) {
            if !n.is_empty() && body.windows(n.len()).any(|w| w == n) {
                return;
            }
        }
        let header_bytes: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len()).sum();
        let weight = u32::try_from(body.len() + header_bytes)
            .unwrap_or(u32::MAX)
            .max(self.cache.min_weight);
        let entry = Arc::new(Entry {
            status: self.status,
            headers: self.headers,
            body,
            stored: Instant::now(),
            ttl: self.ttl,
            tags: self.tags,
            weight,
        });
        self.cache.vary.insert(self.primary, self.names);
        self.cache.held.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        self.cache.store.insert(self.key, entry);
    }
}

/// A streamed body passed on frame by frame and stored when it ends cleanly within
/// `maxEntryBytes` (an error, trailers or too many bytes: nothing is stored).
struct Storing {
    inner: ResponseBody,
    parts: Vec<Bytes>,
    size: u64,
    limit: u64,
    pending: Option<Pending>,
}

impl Storing {
    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            let mut all = bytes::BytesMut::with_capacity(usize::try_from(self.size).unwrap_or(0));
            for part in self.parts.drain(..) {
                all.extend_from_slice(&part);
            }
            p.store(all.freeze());
        }
    }
}

impl http_body::Body for Storing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.size += data.len() as u64;
                    if this.pending.is_some() && this.size <= this.limit {
                        this.parts.push(data.clone());
                    } else {
                        this.pending = None;
                        this.parts.clear();
                    }
                    if this.inner.is_end_stream() {
                        this.finish();
                    }
                } else {
                    this.pending = None; // trailers are not replayed by hits
                }
            }
            Poll::Ready(Some(Err(_))) => this.pending = None,
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

fn hit(entry: &Entry) -> Resp {
    let mut r = Response::new(ResponseBody::Full(Some(entry.body.clone())));
    *r.status_mut() = entry.status;
    *r.headers_mut() = entry.headers.clone();
    let age = entry.stored.elapsed().as_secs();
    r.headers_mut().insert(header::AGE, HeaderValue::from(age));
    r.headers_mut().insert(X_CACHE, HeaderValue::from_static("HIT"));
    r
}

impl<S> Service<Req> for Cache<S>
where
    S: Service<Req, Response = Resp, Error = Infallible>,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Either<Ready<Result<Resp, Infallible>>, Either<Then<S::Future, CachePost>, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if !self.cache.eligible(&req) {
            return Either::Right(Either::Right(self.inner.call(req)));
        }
        let target: Arc<str> = req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path(), |p| p.as_str())
            .into();
        let primary = Primary {
            method: req.method().clone(),
            target,
            auth: req.headers().get(header::AUTHORIZATION).cloned(),
        };
        let no_store = directives(req.headers()).any(|d| is(d, "no-store"));
        let bypass = no_store || directives(req.headers()).any(|d| is(d, "no-cache"));
        if !bypass && self.cache.held.load(std::sync::atomic::Ordering::Acquire) > 0 {
            let names = self.cache.vary.get(&primary).unwrap_or_else(|| Arc::from(Vec::new()));
            let key = self.cache.key(primary.clone(), req.headers(), &names);
            if let Some(entry) = self.cache.store.get(&key) {
                return Either::Left(futures_util::future::ready(Ok(hit(&entry))));
            }
        }
        let post = CachePost {
            cache: self.cache.clone(),
            primary,
            request_headers: req.headers().clone(),
            store: !no_store,
            nonce: req.extensions().get::<CspNonce>().map(|n| n.0.clone()),
        };
        Either::Right(Either::Left(Then::new(self.inner.call(req), post)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use cello_config::ServerConfig;
    use http::Request;
    use http_body_util::BodyExt;

    use super::*;
    use crate::body::RequestBody;
    use crate::builder::{App, Server};
    use crate::endpoint::RoutedRequest;
    use crate::target::Target;

    fn app(cache: CacheConfig, hits: Arc<AtomicUsize>) -> App {
        let c = ServerConfig {
            cache: Some(cache),
            ..ServerConfig::default()
        };
        let mut b = Server::builder(c);
        let endpoint = move |req: RoutedRequest| {
            let hits = hits.clone();
            async move {
                let n = hits.fetch_add(1, Ordering::SeqCst) + 1;
                let path = req.parts.uri.path();
                if path.starts_with("/up") || path.starts_with("/gen") {
                    // Two chunks, like a proxied answer (`/up*`) or any other stream.
                    let frames = vec![
                        Ok::<_, std::io::Error>(http_body::Frame::data(Bytes::from(format!("{n}-")))),
                        Ok(http_body::Frame::data(Bytes::from("end"))),
                    ];
                    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed();
                    let mut r = Response::new(ResponseBody::Boxed(body));
                    if path.starts_with("/up") {
                        r.extensions_mut().insert(Upstream);
                    }
                    return r;
                }
                let mut r = Response::new(ResponseBody::full(format!("{n}")));
                if req.parts.uri.path() == "/cookie" {
                    r.headers_mut()
                        .insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
                }
                r
            }
        };
        b.route(&[Method::GET], "/{name}", Target::Endpoint(Arc::new(endpoint)))
            .unwrap();
        b.build().unwrap()
    }

    async fn get(app: &App, path: &str) -> (Option<String>, String) {
        let req = Request::get(path)
            .header("host", "t")
            .body(RequestBody::empty())
            .unwrap();
        let resp = app.oneshot(req, None).await;
        let x = resp.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (x, String::from_utf8_lossy(&body).into_owned())
    }

    #[test]
    fn directive_names_are_case_insensitive() {
        let mut h = HeaderMap::new();
        h.append(header::CACHE_CONTROL, HeaderValue::from_static("Public, MAX-AGE=60"));
        h.append(
            header::CACHE_CONTROL,
            HeaderValue::from_static(" S-MaxAge=\"30\" ,No-Store"),
        );
        let dirs: Vec<&str> = directives(&h).collect();
        assert_eq!(dirs, ["Public", "MAX-AGE=60", "S-MaxAge=\"30\"", "No-Store"]);
        assert!(dirs.iter().any(|d| is(d, "no-store")) && dirs.iter().any(|d| is(d, "public")));
        assert_eq!(max_age(&h), Some(30), "s-maxage wins over max-age");
        h.remove(header::CACHE_CONTROL);
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("Private=\"x\", Max-Age=5, max-agex=9"),
        );
        assert_eq!(directives(&h).find_map(|d| value_of(d, "private")), Some("\"x\""));
        assert_eq!(max_age(&h), Some(5));
        assert_eq!(value_of("max-age", "max-age"), None, "no value");
        assert_eq!(value_of("ma", "max-age"), None, "shorter than the name");
    }

    #[tokio::test]
    async fn hits_skip_the_endpoint_and_cookies_are_never_stored() {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = app(CacheConfig::default(), hits.clone());
        assert_eq!(app.layers(), ["connection", "cache", "protocol", "router"]);
        assert_eq!(get(&app, "/a").await, (Some("MISS".into()), "1".into()));
        assert_eq!(get(&app, "/a").await, (Some("HIT".into()), "1".into()));
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        get(&app, "/cookie").await;
        assert_eq!(get(&app, "/cookie").await.0.as_deref(), Some("MISS"));
        assert_eq!(hits.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn proxied_streams_are_stored_once_complete_other_streams_never() {
        let hits = Arc::new(AtomicUsize::new(0));
        let app = app(CacheConfig::default(), hits.clone());
        assert_eq!(get(&app, "/up").await, (Some("MISS".into()), "1-end".into()));
        assert_eq!(get(&app, "/up").await, (Some("HIT".into()), "1-end".into()));
        assert_eq!(get(&app, "/gen").await, (Some("MISS".into()), "2-end".into()));
        assert_eq!(get(&app, "/gen").await, (Some("MISS".into()), "3-end".into()));
        // Too big for maxEntryBytes: passed on whole, not stored.
        let small = CacheConfig {
            max_entry_bytes: 3,
            ..CacheConfig::default()
        };
        let hits = Arc::new(AtomicUsize::new(0));
        let app2 = self::app(small, hits);
        assert_eq!(get(&app2, "/up").await, (Some("MISS".into()), "1-end".into()));
        assert_eq!(get(&app2, "/up").await, (Some("MISS".into()), "2-end".into()));
    }

    #[tokio::test]
    async fn entries_are_bounded() {
        let hits = Arc::new(AtomicUsize::new(0));
        let cfg = CacheConfig {
            max_entries: 3,
            max_bytes: 3000,
            max_entry_bytes: 100,
            ..CacheConfig::default()
        };
        let app = app(cfg, hits);
        for i in 0..50 {
            get(&app, &format!("/k{i}")).await;
        }
        let cache = app.state().cache.clone().unwrap();
        assert!(cache.len() <= 3, "{}", cache.len());
    }
}
