//! Rate limiting (`enable_rate_limit`): token bucket, sliding window (the two-window
//! counter estimate) and adaptive (a token bucket whose rate shrinks while the error
//! rate or p95 latency rise), per `key_by`, with per-route overrides. Rejections are
//! 429 problem+json with `Retry-After`; every answer carries `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset`. Counters live in a bounded in-memory
//! table, or in Redis (`backend="redis"`) so the limit holds across workers and pods.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cello_config::{RateLimitConfig, RouteRateLimit};
use http::{HeaderValue, StatusCode};

use crate::ext::{ClientInfo, ConnInfo};
use crate::problem::problem;
use crate::router::Lookup;
use crate::service::AppState;
use crate::stack::{Req, Resp};

/// Keys kept per shard; beyond it idle keys (then the least recently seen) are dropped,
/// so a flood of distinct keys costs bounded memory.
const SHARD_CAP: usize = 4096;
const SHARDS: usize = 16;

/// A limit's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Algo {
    /// `capacity` tokens, `rate` per second.
    Bucket { capacity: f64, rate: f64 },
    /// `max` requests per `window`.
    Window { max: f64, window: f64 },
}

impl Algo {
    fn from_parts(algorithm: &str, capacity: i64, rate: f64, window: f64) -> Self {
        if algorithm == "sliding_window" {
            Algo::Window {
                max: capacity as f64,
                window,
            }
        } else {
            Algo::Bucket {
                capacity: capacity as f64,
                rate,
            }
        }
    }

    fn limit(&self) -> f64 {
        match *self {
            Algo::Bucket { capacity, .. } => capacity,
            Algo::Window { max, .. } => max,
        }
    }
}

/// What one check decided.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Let it through.
    pub allowed: bool,
    /// The limit in force (adaptive: the current one).
    pub limit: u64,
    /// Requests left right now.
    pub remaining: u64,
    /// Seconds until the quota is fully available again (`RateLimit-Reset`).
    pub reset: u64,
    /// Seconds to wait before retrying (`Retry-After`, on a rejection).
    pub retry_after: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    /// Bucket: tokens. Window: count in the current window.
    a: f64,
    /// Window: count in the previous window.
    b: f64,
    /// Bucket: last refill. Window: start of the current window.
    at: Instant,
    seen: Instant,
}

fn ceil_secs(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 {
        s.ceil() as u64
    } else {
        0
    }
}

/// One step of the algorithm on a key's state (shared by the memory store and tests).
fn step(algo: Algo, slot: &mut Slot, now: Instant) -> Decision {
    slot.seen = now;
    match algo {
        Algo::Bucket { capacity, rate } => {
            let dt = now.saturating_duration_since(slot.at).as_secs_f64();
            slot.a = (slot.a + dt * rate).min(capacity);
            slot.at = now;
            let allowed = slot.a >= 1.0;
            if allowed {
                slot.a -= 1.0;
            }
            Decision {
                allowed,
                limit: capacity as u64,
                remaining: slot.a.floor().max(0.0) as u64,
                reset: ceil_secs((capacity - slot.a) / rate),
                retry_after: if allowed {
                    0
                } else {
                    ceil_secs((1.0 - slot.a) / rate).max(1)
                },
            }
        }
        Algo::Window { max, window } => {
            let mut elapsed = now.saturating_duration_since(slot.at).as_secs_f64();
            if elapsed >= window {
                let windows = (elapsed / window).floor();
                // One window on: the current becomes the previous; more: both are empty.
                slot.b = if windows < 2.0 { slot.a } else { 0.0 };
                slot.a = 0.0;
                slot.at += Duration::from_secs_f64(windows * window);
                elapsed -= windows * window;
            }
            let weight = 1.0 - elapsed / window;
            let estimate = slot.b * weight + slot.a;
            let allowed = estimate + 1.0 <= max;
            if allowed {
                slot.a += 1.0;
            }
            let used = slot.b * weight + slot.a;
            Decision {
                allowed,
                limit: max as u64,
                remaining: (max - used).floor().max(0.0) as u64,
                reset: ceil_secs(window - elapsed),
                retry_after: if allowed { 0 } else { ceil_secs(window - elapsed).max(1) },
            }
        }
    }
}

/// Bounded, sharded in-memory counters.
pub struct MemoryStore {
    shards: Vec<Mutex<HashMap<u64, Slot>>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

impl MemoryStore {
    /// Count one request for `key` under `algo`.
    pub fn hit(&self, key: &str, algo: Algo) -> Decision {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        self.hit_hashed(h.finish(), algo)
    }

    /// Count one request for the key with hash `hash` under `algo`.
    pub fn hit_hashed(&self, hash: u64, algo: Algo) -> Decision {
        let now = Instant::now();
        let shard = &self.shards[(hash as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(&hash) && map.len() >= SHARD_CAP {
            evict(&mut map, algo, now);
        }
        let slot = map.entry(hash).or_insert(Slot {
            // A new bucket is full; a new window is empty.
            a: if let Algo::Bucket { capacity, .. } = algo {
                capacity
            } else {
                0.0
            },
            b: 0.0,
            at: now,
            seen: now,
        });
        step(algo, slot, now)
    }

    /// Keys held (for the bounded-memory test).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().map(|m| m.len()).unwrap_or(0)).sum()
    }

    /// No keys held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Make room: drop keys that are back at rest, else the least recently seen quarter.
fn evict(map: &mut HashMap<u64, Slot>, algo: Algo, now: Instant) {
    let idle = match algo {
        Algo::Bucket { capacity, rate } => Duration::from_secs_f64((capacity / rate).min(86_400.0)),
        Algo::Window { window, .. } => Duration::from_secs_f64((2.0 * window).min(86_400.0)),
    };
    map.retain(|_, s| now.saturating_duration_since(s.seen) < idle);
    if map.len() >= SHARD_CAP {
        let mut seen: Vec<Instant> = map.values().map(|s| s.seen).collect();
        seen.sort_unstable();
        let cut = seen[seen.len() / 4];
        map.retain(|_, s| s.seen > cut);
    }
}

/// The adaptive controller: a factor in `[min/capacity, 1]` applied to the bucket.
pub struct Adaptive {
    capacity: f64,
    min_factor: f64,
    threshold: f64,
    /// factor × 1e6.
    factor: AtomicU64,
    window: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    since: Option<Instant>,
    total: u64,
    errors: u64,
    latencies: Vec<f64>,
    /// p95 latency when the system was healthy (seconds).
    baseline: Option<f64>,
}

/// How often the adaptive controller re-evaluates.
const ADAPT_EVERY: Duration = Duration::from_millis(500);

impl Adaptive {
    fn new(c: &RateLimitConfig) -> Self {
        let cap = c.capacity as f64;
        Self {
            capacity: cap,
            min_factor: c.min_capacity.map_or(0.1, |m| m as f64 / cap),
            threshold: c.error_threshold.unwrap_or(0.5),
            factor: AtomicU64::new(1_000_000),
            window: Mutex::new(Stats::default()),
        }
    }

    /// The current factor (1 = the configured rate).
    pub fn factor(&self) -> f64 {
        self.factor.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Feed one finished request; shrinks on a high error rate or rising p95 latency,
    /// grows back when both are fine.
    pub fn observe(&self, status: u16, latency: Duration) {
        let mut st = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let since = *st.since.get_or_insert(now);
        st.total += 1;
        if status >= 500 {
            st.errors += 1;
        }
        if st.latencies.len() < 4096 {
            st.latencies.push(latency.as_secs_f64());
        }
        if now.saturating_duration_since(since) < ADAPT_EVERY {
            return;
        }
        let err_rate = st.errors as f64 / st.total.max(1) as f64;
        let mut lat = std::mem::take(&mut st.latencies);
        lat.sort_by(|a, b| a.total_cmp(b));
        let p95 = lat.get(lat.len() * 95 / 100).copied().unwrap_or(0.0);
        let slow = st.baseline.is_some_and(|b| p95 > 2.0 * b.max(0.001));
        let mut f = self.factor();
        if err_rate > self.threshold || slow {
            f = (f * 0.5).max(self.min_factor);
        } else {
            f = (f * 1.25).min(1.0);
            st.baseline = Some(st.baseline.map_or(p95, |b| b * 0.8 + p95 * 0.2));
        }
        self.factor.store((f * 1e6) as u64, Ordering::Relaxed);
        CURRENT_LIMIT.store((self.capacity * f).max(1.0).to_bits(), Ordering::Relaxed);
        st.since = Some(now);
        st.total = 0;
        st.errors = 0;
    }
}

/// The current limit for the metrics (`f64` bits; `u64::MAX`: no limiter).
static CURRENT_LIMIT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The limit in force, for the `rate_limit_current` gauge, when rate limiting is on.
pub fn current_limit_metric() -> Option<f64> {
    let bits = CURRENT_LIMIT.load(Ordering::Relaxed);
    (bits != u64::MAX).then(|| f64::from_bits(bits))
}

/// The configured limiter, built once.
pub struct RateLimiter {
    algo: Algo,
    key_by: KeyBy,
    routes: HashMap<String, Algo>,
    routes_only: bool,
    memory: MemoryStore,
    /// Present for `algorithm="adaptive"`.
    pub adaptive: Option<Adaptive>,
    /// Present for `backend="redis"`.
    redis: Option<crate::ratelimit_redis::RedisStore>,
}

enum KeyBy {
    Ip,
    Header(http::HeaderName),
    User,
    ApiKey,
    Global,
    Route,
}

impl RateLimiter {
    /// From the validated config.
    pub fn new(c: &RateLimitConfig) -> crate::Result<Self> {
        let algo = Algo::from_parts(&c.algorithm, c.capacity, c.refill_rate, c.window_secs);
        CURRENT_LIMIT.store(algo.limit().to_bits(), Ordering::Relaxed);
        let key_by = match c.key_by.as_str() {
            "ip" => KeyBy::Ip,
            "user" => KeyBy::User,
            "api_key" => KeyBy::ApiKey,
            "global" => KeyBy::Global,
            "route" => KeyBy::Route,
            other => KeyBy::Header(
                other
                    .strip_prefix("header:")
                    .and_then(|h| http::HeaderName::from_bytes(h.as_bytes()).ok())
                    .ok_or_else(|| {
                        crate::Error::Config(cello_config::Error::Invalid {
                            field: "key_by".into(),
                            reason: format!("bad key_by {other:?}"),
                        })
                    })?,
            ),
        };
        let routes = c
            .routes
            .iter()
            .map(|(t, r): (&String, &RouteRateLimit)| {
                (
                    t.clone(),
                    Algo::from_parts(&r.algorithm, r.capacity, r.refill_rate, r.window_secs),
                )
            })
            .collect();
        Ok(Self {
            algo,
            key_by,
            routes,
            routes_only: c.routes_only,
            memory: MemoryStore::default(),
            adaptive: (c.algorithm == "adaptive").then(|| Adaptive::new(c)),
            redis: match c.backend.as_str() {
                "redis" => Some(crate::ratelimit_redis::RedisStore::new(&c.redis_url)?),
                _ => None,
            },
        })
    }

    /// Keys held in memory.
    pub fn keys_held(&self) -> usize {
        self.memory.len()
    }

    /// The limit in force now (adaptive: shrunk by the controller).
    pub fn current_limit(&self) -> f64 {
        self.algo.limit() * self.adaptive.as_ref().map_or(1.0, Adaptive::factor)
    }

    /// The key and limit for `req`: `None` when the request is not limited.
    pub fn plan<'r>(&self, state: &AppState, req: &'r Req) -> Option<(RateKey<'r>, Algo)> {
        let path = crate::auth::app_path(req);
        let template = if !self.routes.is_empty() || matches!(self.key_by, KeyBy::Route) {
            match state.router.lookup(req.method(), path) {
                Lookup::Found { route, .. } => Some(route.template.clone()),
                _ => None,
            }
        } else {
            None
        };
        let over = template.as_deref().and_then(|t| self.routes.get(t).copied());
        if over.is_none() && self.routes_only {
            return None;
        }
        let mut algo = over.unwrap_or(self.algo);
        if over.is_none() {
            if let (Some(a), Algo::Bucket { capacity, rate }) = (&self.adaptive, algo) {
                let f = a.factor();
                algo = Algo::Bucket {
                    capacity: (capacity * f).max(1.0),
                    rate: rate * f,
                };
            }
        }
        let part = match &self.key_by {
            KeyBy::Ip => KeyPart::Ip(client_addr(req)),
            KeyBy::Header(h) => match req.headers().get(h) {
                Some(v) => KeyPart::Header(v.as_bytes()),
                None => KeyPart::Ip(client_addr(req)),
            },
            // The limit runs before authentication, so a user is known by the credential
            // they present (hashed), falling back to the client address.
            KeyBy::User | KeyBy::ApiKey => {
                let cred = req
                    .headers()
                    .get(http::header::AUTHORIZATION)
                    .or_else(|| req.headers().get("x-api-key"));
                match cred {
                    Some(v) => KeyPart::User(v.as_bytes()),
                    None => KeyPart::Ip(client_addr(req)),
                }
            }
            KeyBy::Global => KeyPart::Global,
            KeyBy::Route => KeyPart::Route(
                template
                    .clone()
                    .map_or_else(|| RouteName::Path(path), RouteName::Template),
            ),
        };
        let key = RateKey {
            part,
            route: over.is_some().then(|| template.unwrap_or_else(|| Arc::from(""))),
        };
        Some((key, algo))
    }

    /// Count `req` in memory.
    pub fn hit_memory(&self, key: &RateKey<'_>, algo: Algo) -> Decision {
        self.memory.hit_hashed(key.memory_hash(), algo)
    }

    /// Count `req` in Redis (falls back to memory when Redis is unreachable).
    async fn hit_shared(&self, key: &str, algo: Algo) -> Decision {
        let Some(store) = &self.redis else {
            return self.memory.hit(key, algo);
        };
        match store.hit(key, algo).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(target: "cello.ratelimit", "redis rate-limit backend failed ({e}); counting in this worker");
                self.memory.hit(key, algo)
            }
        }
    }
}

/// The client a key names, before it is written out.
#[derive(Clone, Copy)]
enum Client {
    Ip(std::net::IpAddr),
    Unknown,
}

/// A route in a `key_by="route"` key.
enum RouteName<'r> {
    Template(Arc<str>),
    Path(&'r str),
}

/// What a request is counted under.
enum KeyPart<'r> {
    Ip(Client),
    Header(&'r [u8]),
    /// The credential (hashed when written out).
    User(&'r [u8]),
    Global,
    Route(RouteName<'r>),
}

/// A request's rate-limit key: hashed as it is for the in-memory counters (no string
/// built per request), written out as `ip:…`, `h:…`, `u:…`, `global`, `r:…` (prefixed
/// `template|` for a per-route override) for Redis.
pub struct RateKey<'r> {
    part: KeyPart<'r>,
    /// The route template of a per-route override.
    route: Option<Arc<str>>,
}

impl RateKey<'_> {
    /// The key as Redis stores it.
    pub fn to_key_string(&self) -> String {
        let key = match &self.part {
            KeyPart::Ip(Client::Ip(ip)) => format!("ip:{ip}"),
            KeyPart::Ip(Client::Unknown) => "ip:unknown".to_owned(),
            KeyPart::Header(v) => format!("h:{}", String::from_utf8_lossy(v)),
            KeyPart::User(v) => format!("u:{}", short_hash(v)),
            KeyPart::Global => "global".to_owned(),
            KeyPart::Route(RouteName::Template(t)) => format!("r:{t}"),
            KeyPart::Route(RouteName::Path(p)) => format!("r:{p}"),
        };
        match &self.route {
            Some(t) => format!("{t}|{key}"),
            None => key,
        }
    }

    /// The in-memory counters' hash: one per distinct [`Self::to_key_string`] (the
    /// credential itself stands for its hash, the address for its text).
    fn memory_hash(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.route.as_deref().hash(&mut h);
        match &self.part {
            KeyPart::Ip(Client::Ip(ip)) => (0u8, ip).hash(&mut h),
            KeyPart::Ip(Client::Unknown) => 1u8.hash(&mut h),
            KeyPart::Header(v) => (2u8, v).hash(&mut h),
            KeyPart::User(v) => (3u8, v).hash(&mut h),
            KeyPart::Global => 4u8.hash(&mut h),
            KeyPart::Route(RouteName::Template(t)) => (5u8, &**t).hash(&mut h),
            KeyPart::Route(RouteName::Path(p)) => (5u8, *p).hash(&mut h),
        }
        h.finish()
    }
}

fn short_hash(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..12].iter().map(|b| format!("{b:02x}")).collect()
}

/// The client address: resolved by the trusted-proxy layer, else the socket peer.
fn client_addr(req: &Req) -> Client {
    if let Some(c) = req.extensions().get::<ClientInfo>() {
        return Client::Ip(c.ip);
    }
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.peer)
        .map_or(Client::Unknown, |p| Client::Ip(p.ip()))
}

const RATELIMIT_LIMIT: http::HeaderName = http::HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: http::HeaderName = http::HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: http::HeaderName = http::HeaderName::from_static("ratelimit-reset");

/// Numbers below this are header values from a table built once.
const SMALL: u64 = 1024;

/// `n` as a header value, without an allocation per response: below [`SMALL`] (every
/// `Reset`, most limits and remainders) from a table of static values (a clone copies a
/// pointer), larger ones from the few this thread made last (a steady key's `Limit` and
/// `Remaining` repeat; a clone there is a reference count).
fn number(n: u64) -> HeaderValue {
    static TABLE: std::sync::OnceLock<Box<[HeaderValue]>> = std::sync::OnceLock::new();
    if n < SMALL {
        let table = TABLE.get_or_init(|| {
            // One string for the whole table, kept for the process: the values are static.
            let mut text = String::new();
            let mut ends = Vec::with_capacity(SMALL as usize);
            for i in 0..SMALL {
                text.push_str(&i.to_string());
                ends.push(text.len());
            }
            let text: &'static str = Box::leak(text.into_boxed_str());
            let mut start = 0;
            ends.into_iter()
                .map(|end| {
                    let v = HeaderValue::from_static(&text[start..end]);
                    start = end;
                    v
                })
                .collect()
        });
        return table[n as usize].clone();
    }
    /// The next slot to replace, and the last four numbers with their values.
    type Recent = (usize, [(u64, Option<HeaderValue>); 4]);
    thread_local! {
        static RECENT: std::cell::RefCell<Recent> =
            const { std::cell::RefCell::new((0, [(0, None), (0, None), (0, None), (0, None)])) };
    }
    RECENT.with_borrow_mut(|(next, recent)| {
        if let Some((_, Some(v))) = recent.iter().find(|(k, v)| *k == n && v.is_some()) {
            return v.clone();
        }
        let v = HeaderValue::from(n);
        recent[*next] = (n, Some(v.clone()));
        *next = (*next + 1) % recent.len();
        v
    })
}

/// The `RateLimit-*` headers on any response.
pub fn annotate(resp: &mut Resp, d: &Decision) {
    let h = resp.headers_mut();
    h.insert(RATELIMIT_LIMIT, number(d.limit));
    h.insert(RATELIMIT_REMAINING, number(d.remaining));
    h.insert(RATELIMIT_RESET, number(d.reset));
}

/// The 429 answer.
pub fn rejection(d: &Decision) -> Resp {
    let mut resp = problem(
        StatusCode::TOO_MANY_REQUESTS,
        format!("rate limit exceeded; retry in {} s", d.retry_after),
    );
    resp.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(d.retry_after));
    annotate(&mut resp, d);
    resp
}

// ---- the layer -----------------------------------------------------------------------

/// The rate-limit layer of the stack.
pub struct RateLimitLayer(pub Arc<AppState>, pub Arc<RateLimiter>);

impl<S> tower::Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;
    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            state: self.0.clone(),
            limiter: self.1.clone(),
        }
    }
}

/// See [`RateLimitLayer`].
#[derive(Clone)]
pub struct RateLimit<S> {
    inner: S,
    state: Arc<AppState>,
    limiter: Arc<RateLimiter>,
}

/// Adds the headers and feeds the adaptive controller.
pub struct RatePost {
    decision: Decision,
    limiter: Arc<RateLimiter>,
    start: Instant,
}

impl crate::stack::Post for RatePost {
    fn post(self, mut resp: Resp) -> Resp {
        if let Some(a) = &self.limiter.adaptive {
            a.observe(resp.status().as_u16(), self.start.elapsed());
        }
        annotate(&mut resp, &self.decision);
        resp
    }
}

type Ready = futures_util::future::Ready<Result<Resp, std::convert::Infallible>>;

type Local<F> = futures_util::future::Either<Ready, crate::stack::Then<F, RatePost>>;

impl<S> tower::Service<Req> for RateLimit<S>
where
    S: tower::Service<Req, Response = Resp, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Resp;
    type Error = std::convert::Infallible;
    type Future = futures_util::future::Either<Local<S::Future>, crate::target::BoxFuture>;
    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Req) -> Self::Future {
        use futures_util::future::Either;
        // The key borrows the request: settle what it is needed for before the request moves on.
        let local = match self.limiter.plan(&self.state, &req) {
            None => None,
            Some((key, algo)) if self.limiter.redis.is_some() => Some(Err((key.to_key_string(), algo))),
            Some((key, algo)) => Some(Ok(self.limiter.hit_memory(&key, algo))),
        };
        let decision = match local {
            None => {
                return Either::Left(Either::Right(crate::stack::Then {
                    inner: self.inner.call(req),
                    post: None,
                }));
            }
            Some(Ok(decision)) => decision,
            Some(Err((key, algo))) => {
                // The ready clone serves this request (tower's "take the ready service" rule).
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                let limiter = self.limiter.clone();
                return Either::Right(Box::pin(async move {
                    let decision = limiter.hit_shared(&key, algo).await;
                    if !decision.allowed {
                        return Ok(rejection(&decision));
                    }
                    let start = Instant::now();
                    let resp = inner.call(req).await?;
                    Ok(crate::stack::Post::post(
                        RatePost {
                            decision,
                            limiter,
                            start,
                        },
                        resp,
                    ))
                }));
            }
        };
        if !decision.allowed {
            return Either::Left(Either::Left(futures_util::future::ready(Ok(rejection(&decision)))));
        }
        Either::Left(Either::Right(crate::stack::Then::new(
            self.inner.call(req),
            RatePost {
                decision,
                limiter: self.limiter.clone(),
                start: Instant::now(),
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_same_values_from_the_table_and_the_recent_ones() {
        for n in [
            0,
            1,
            9,
            10,
            999,
            1023,
            1024,
            4096,
            999_999_999,
            999_999_999,
            u64::MAX,
            5,
            1024,
        ] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
        // More distinct large values than the recent list holds: still each its own.
        for n in 2000..2010 {
            assert_eq!(number(n), HeaderValue::from(n));
            assert_eq!(number(n), HeaderValue::from(n));
        }
    }

    #[test]
    fn token_bucket_allows_capacity_then_refills() {
        let s = MemoryStore::default();
        let algo = Algo::Bucket {
            capacity: 3.0,
            rate: 1000.0,
        };
        let slow = Algo::Bucket {
            capacity: 3.0,
            rate: 0.001,
        };
        for i in 0..3 {
            assert!(s.hit("k", slow).allowed, "request {i}");
        }
        let d = s.hit("k", slow);
        assert!(!d.allowed && d.retry_after >= 1 && d.remaining == 0);
        assert!(s.hit("other", slow).allowed);
        assert!(s.hit("fast", algo).allowed);
    }

    #[test]
    fn sliding_window_counts_per_window() {
        let s = MemoryStore::default();
        let algo = Algo::Window { max: 2.0, window: 60.0 };
        assert!(s.hit("k", algo).allowed);
        assert!(s.hit("k", algo).allowed);
        let d = s.hit("k", algo);
        assert!(!d.allowed && d.retry_after >= 1 && d.limit == 2);
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_keys() {
        let s = MemoryStore::default();
        let algo = Algo::Bucket {
            capacity: 5.0,
            rate: 0.01,
        };
        for i in 0..200_000 {
            s.hit(&format!("k{i}"), algo);
        }
        assert!(s.len() <= SHARDS * SHARD_CAP, "{} keys held", s.len());
    }

    #[test]
    fn adaptive_shrinks_on_errors_and_recovers() {
        let c = RateLimitConfig {
            algorithm: "adaptive".into(),
            capacity: 100,
            min_capacity: Some(10),
            error_threshold: Some(0.2),
            ..RateLimitConfig::default()
        };
        let a = Adaptive::new(&c);
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.factor() > 0.99 && Instant::now() < deadline {
            a.observe(500, Duration::from_millis(1));
        }
        assert!(a.factor() < 1.0);
        while a.factor() < 0.99 && Instant::now() < deadline {
            a.observe(200, Duration::from_millis(1));
        }
        assert!(a.factor() >= 0.99);
    }
}
