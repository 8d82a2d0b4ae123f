//! Prometheus metrics following the OpenTelemetry HTTP semantic conventions, plus
//! Cello's runtime metrics.
//!
//! The hot path takes no lock: every route has pre-allocated series per method, and a
//! few lock-free status slots per (route, method), claimed with a compare-and-swap the
//! first time a status code is seen. Requests that match no route share one series per
//! (method, status) with `http_route=""`, so unknown paths never add series.
//! See [`snapshot`] for how workers are added up.

pub mod histogram;
pub mod observe;
pub mod snapshot;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use cello_config::ServerConfig;
use http::Method;

use self::histogram::{Histogram, DURATION_BOUNDS_NS, SIZE_BOUNDS};
use self::snapshot::{labels, Kind, Snapshot, SupervisorStats, Value, METRICS_DIR_ENV};

/// Open connections of this process (every server in it).
pub static CONNECTIONS_OPEN: AtomicI64 = AtomicI64::new(0);
/// Connections accepted by this process so far.
pub static CONNECTIONS_TOTAL: AtomicU64 = AtomicU64::new(0);
/// Blocking handlers running in the thread pool right now.
pub static THREADPOOL_BUSY: AtomicI64 = AtomicI64::new(0);
/// Background tasks (run after their response) that raised.
pub static BACKGROUND_TASK_FAILURES: AtomicU64 = AtomicU64::new(0);
/// Sync routes adaptive offload runs in the thread pool right now.
pub static OFFLOADED_ROUTES: AtomicI64 = AtomicI64::new(0);
/// Adaptive offload moves: [to the pool, back inline].
pub static OFFLOAD_SWITCHES: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Requests refused with 503 because the queue to the Python thread was full.
pub static QUEUE_REJECTED: AtomicU64 = AtomicU64::new(0);

/// A figure from outside the server (the data layer's pools), added to every snapshot.
#[derive(Debug, Clone)]
pub struct ExtraSample {
    /// Name after the `{namespace}_` prefix, e.g. `db_pool_size`.
    pub name: &'static str,
    pub help: &'static str,
    /// A counter (else a gauge).
    pub counter: bool,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Sources of [`ExtraSample`]s (registered once per process by the crates that own them).
/// A function giving extra samples (pool gauges and the like) at each snapshot.
type Source = fn() -> Vec<ExtraSample>;

static SOURCES: Mutex<Vec<Source>> = Mutex::new(Vec::new());

/// Add a source of extra samples to every `/metrics` snapshot of this process.
pub fn register_source(source: fn() -> Vec<ExtraSample>) {
    let mut all = SOURCES.lock().unwrap_or_else(PoisonError::into_inner);
    if !all.iter().any(|s| std::ptr::fn_addr_eq(*s, source)) {
        all.push(source);
    }
}

/// Counts a connection while it lives (embedded in the connection's activity record).
#[derive(Debug)]
pub struct ConnGuard(());

impl Default for ConnGuard {
    fn default() -> Self {
        CONNECTIONS_OPEN.fetch_add(1, Ordering::Relaxed);
        CONNECTIONS_TOTAL.fetch_add(1, Ordering::Relaxed);
        Self(())
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        CONNECTIONS_OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Method label values; anything else is `_OTHER` (semantic conventions).
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "_OTHER",
];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::CONNECT => 7,
        Method::TRACE => 8,
        _ => 9,
    }
}

/// Whether `m` is one of the standard methods (others are labelled `_OTHER`).
pub fn known_method(m: &Method) -> bool {
    method_index(m) < METHODS.len() - 1
}

/// The three request histograms of one (route, method, status).
struct HistSet {
    duration: Histogram,
    request_size: Histogram,
    response_size: Histogram,
}

impl Default for HistSet {
    fn default() -> Self {
        Self {
            duration: Histogram::new(DURATION_BOUNDS_NS),
            request_size: Histogram::new(SIZE_BOUNDS),
            response_size: Histogram::new(SIZE_BOUNDS),
        }
    }
}

const STATUS_SLOTS: usize = 8;

#[derive(Default)]
struct Slot {
    status: AtomicU16,
    set: OnceLock<Box<HistSet>>,
}

/// Series of one route template.
struct RouteSeries {
    template: OnceLock<Arc<str>>,
    slots: [[Slot; STATUS_SLOTS]; METHODS.len()],
}

impl Default for RouteSeries {
    fn default() -> Self {
        Self {
            template: OnceLock::new(),
            slots: Default::default(),
        }
    }
}

impl RouteSeries {
    /// The histograms for `status`, claiming a free slot; `None` when all are taken.
    fn get(&self, method: usize, status: u16) -> Option<&HistSet> {
        for slot in &self.slots[method] {
            let cur = slot.status.load(Ordering::Acquire);
            let mine = cur == status
                || (cur == 0
                    && match slot
                        .status
                        .compare_exchange(0, status, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => true,
                        Err(other) => other == status,
                    });
            if mine {
                return Some(slot.set.get_or_init(Box::default));
            }
        }
        None
    }
}

/// Which series a request belongs to.
#[derive(Clone, Copy)]
pub enum RouteKey<'a> {
    /// Matched `template`; `index` is the route's target (a dense index for Python apps).
    Matched { index: usize, template: &'a Arc<str> },
    /// No route matched (404, 405, automatic OPTIONS, bad paths).
    Unmatched,
}

/// What one finished request contributes.
pub struct Sample<'a> {
    /// The series.
    pub route: RouteKey<'a>,
    /// Request method.
    pub method: &'a Method,
    /// Response status.
    pub status: u16,
    /// Head to response head.
    pub duration: Duration,
    /// Request body bytes.
    pub request_size: u64,
    /// Response body bytes, when known before streaming.
    pub response_size: Option<u64>,
}

/// (template, method index, status) of a series outside the pre-allocated table.
type OverflowKey = (Arc<str>, usize, u16);

/// The metrics of one server (one worker process).
pub struct Metrics {
    /// `/metrics` path.
    pub endpoint: String,
    prefix: String,
    namespace: String,
    routes: Box<[RouteSeries]>,
    unmatched: RouteSeries,
    overflow: Mutex<HashMap<OverflowKey, Arc<HistSet>>>,
    active: [AtomicI64; METHODS.len()],
    queue: Histogram,
    handler: Histogram,
    threadpool_size: u64,
    dir: Option<PathBuf>,
    started: Instant,
}

impl Metrics {
    /// Metrics for a server with `routes` routes (their targets index the table).
    pub fn new(config: &ServerConfig, routes: usize) -> Self {
        let p = &config.prometheus;
        let prefix = if p.subsystem.is_empty() {
            format!("{}_", p.namespace)
        } else {
            format!("{}_{}_", p.namespace, p.subsystem)
        };
        let dir = std::env::var_os(METRICS_DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        Self {
            endpoint: p.endpoint.clone(),
            prefix,
            namespace: p.namespace.clone(),
            routes: (0..routes).map(|_| RouteSeries::default()).collect(),
            unmatched: RouteSeries::default(),
            overflow: Mutex::new(HashMap::new()),
            active: Default::default(),
            queue: Histogram::new(DURATION_BOUNDS_NS),
            handler: Histogram::new(DURATION_BOUNDS_NS),
            threadpool_size: u64::from(config.threadpool.size),
            dir,
            started: Instant::now(),
        }
    }

    /// The shared snapshot directory (`$CELLO_METRICS_DIR`), if any.
    pub fn dir(&self) -> Option<&PathBuf> {
        self.dir.as_ref()
    }

    /// A request started.
    pub fn request_started(&self, method: &Method) {
        self.active[method_index(method)].fetch_add(1, Ordering::Relaxed);
    }

    /// A request finished (pairs with [`Self::request_started`]).
    pub fn request_finished(&self, s: &Sample<'_>) {
        let m = method_index(s.method);
        self.active[m].fetch_sub(1, Ordering::Relaxed);
        let record = |set: &HistSet| {
            set.duration.observe(nanos(s.duration));
            set.request_size.observe(s.request_size);
            if let Some(n) = s.response_size {
                set.response_size.observe(n);
            }
        };
        let series = match s.route {
            RouteKey::Unmatched => Some(&self.unmatched),
            RouteKey::Matched { index, template } => self.routes.get(index).filter(|r| {
                let t = r.template.get_or_init(|| template.clone());
                Arc::ptr_eq(t, template) || **t == **template
            }),
        };
        if let Some(set) = series.and_then(|r| r.get(m, s.status)) {
            record(set);
            return;
        }
        // Rare: an unexpected target, or more distinct statuses than slots.
        let template = match s.route {
            RouteKey::Matched { template, .. } => template.clone(),
            RouteKey::Unmatched => Arc::from(""),
        };
        let set = self
            .overflow
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((template, m, s.status))
            .or_default()
            .clone();
        record(&set);
    }

    /// Time a request waited for the Python thread.
    pub fn observe_queue(&self, d: Duration) {
        self.queue.observe(nanos(d));
    }

    /// Time a handler took (after it left the queue).
    pub fn observe_handler(&self, d: Duration) {
        self.handler.observe(nanos(d));
    }

    /// This process's values.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot {
            pid: std::process::id(),
            ..Snapshot::default()
        };
        let dur = "http_server_request_duration_seconds";
        let req = "http_server_request_body_size_bytes";
        let resp = "http_server_response_body_size_bytes";
        let mut add_set = |route: &str, m: usize, status: u16, set: &HistSet| {
            let code = status.to_string();
            let l = labels(&[
                ("http_request_method", METHODS[m]),
                ("http_response_status_code", &code),
                ("http_route", route),
            ]);
            s.add(
                dur,
                Kind::Histogram,
                "Duration of HTTP server requests.",
                l.clone(),
                Value::Histogram(set.duration.snapshot(1e9)),
            );
            s.add(
                req,
                Kind::Histogram,
                "Size of HTTP server request bodies.",
                l.clone(),
                Value::Histogram(set.request_size.snapshot(1.0)),
            );
            if set.response_size.snapshot(1.0).count > 0 {
                s.add(
                    resp,
                    Kind::Histogram,
                    "Size of HTTP server response bodies (when known before streaming).",
                    l,
                    Value::Histogram(set.response_size.snapshot(1.0)),
                );
            }
        };
        let all = self.routes.iter().chain(std::iter::once(&self.unmatched));
        for (i, r) in all.enumerate() {
            let unmatched = i == self.routes.len();
            let template = match r.template.get() {
                Some(t) => &**t,
                None if unmatched => "",
                None => continue,
            };
            for (m, slots) in r.slots.iter().enumerate() {
                for slot in slots {
                    let status = slot.status.load(Ordering::Acquire);
                    if let (true, Some(set)) = (status != 0, slot.set.get()) {
                        add_set(template, m, status, set);
                    }
                }
            }
        }
        for ((template, m, status), set) in self.overflow.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            add_set(template, *m, *status, set);
        }
        for (m, a) in self.active.iter().enumerate() {
            let v = a.load(Ordering::Relaxed);
            if v != 0 || m == 0 {
                s.add(
                    "http_server_active_requests",
                    Kind::Gauge,
                    "Number of active HTTP server requests.",
                    labels(&[("http_request_method", METHODS[m])]),
                    Value::Number(v as f64),
                );
            }
        }
        let p = &self.prefix;
        let gauge = |s: &mut Snapshot, name: &str, help: &str, v: f64| {
            s.add(
                &format!("{p}{name}"),
                Kind::Gauge,
                help,
                String::new(),
                Value::Number(v),
            );
        };
        gauge(
            &mut s,
            "open_connections",
            "Open client connections.",
            CONNECTIONS_OPEN.load(Ordering::Relaxed) as f64,
        );
        gauge(
            &mut s,
            "threadpool_size",
            "Threads of the blocking-handler pool (per worker, added up).",
            self.threadpool_size as f64,
        );
        gauge(
            &mut s,
            "threadpool_busy",
            "Blocking handlers running in the pool.",
            THREADPOOL_BUSY.load(Ordering::Relaxed) as f64,
        );
        if let Some(limit) = crate::ratelimit::current_limit_metric() {
            gauge(
                &mut s,
                "rate_limit_current",
                "The rate limit in force (adaptive: after shrinking), requests per bucket.",
                limit,
            );
        }
        s.add(
            &format!("{p}background_task_failures_total"),
            Kind::Counter,
            "Background tasks that raised (each is logged with its traceback).",
            String::new(),
            Value::Number(BACKGROUND_TASK_FAILURES.load(Ordering::Relaxed) as f64),
        );
        gauge(
            &mut s,
            "offloaded_routes",
            "Sync routes adaptive offload currently runs in the thread pool.",
            OFFLOADED_ROUTES.load(Ordering::Relaxed) as f64,
        );
        for (i, to) in ["pool", "inline"].into_iter().enumerate() {
            s.add(
                &format!("{p}offload_switches_total"),
                Kind::Counter,
                "Adaptive offload decisions: a route moved to the thread pool, or back inline.",
                labels(&[("to", to)]),
                Value::Number(OFFLOAD_SWITCHES[i].load(Ordering::Relaxed) as f64),
            );
        }
        s.add(
            &format!("{p}queue_rejected_total"),
            Kind::Counter,
            "Requests refused (503) because the queue to the Python thread was full.",
            String::new(),
            Value::Number(QUEUE_REJECTED.load(Ordering::Relaxed) as f64),
        );
        s.add(
            &format!("{p}connections_total"),
            Kind::Counter,
            "Client connections accepted.",
            String::new(),
            Value::Number(CONNECTIONS_TOTAL.load(Ordering::Relaxed) as f64),
        );
        s.add(
            &format!("{p}queue_duration_seconds"),
            Kind::Histogram,
            "Time a matched request waited for the Python thread.",
            String::new(),
            Value::Histogram(self.queue.snapshot(1e9)),
        );
        s.add(
            &format!("{p}handler_duration_seconds"),
            Kind::Histogram,
            "Time from the Python thread taking a request to its response (handler time).",
            String::new(),
            Value::Histogram(self.handler.snapshot(1e9)),
        );
        let ns = &self.namespace;
        for source in SOURCES.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            for x in source() {
                let pairs: Vec<(&str, &str)> = x.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let kind = if x.counter { Kind::Counter } else { Kind::Gauge };
                s.add(
                    &format!("{ns}_{}", x.name),
                    kind,
                    x.help,
                    labels(&pairs),
                    Value::Number(x.value),
                );
            }
        }
        s
    }

    /// Write this process's snapshot to the shared directory (no-op without one).
    pub fn persist(&self) {
        if let Some(dir) = &self.dir {
            if let Err(e) = snapshot::write_snapshot(dir, &self.snapshot()) {
                tracing::debug!(error = %e, dir = %dir.display(), "cannot write the metrics snapshot");
            }
        }
    }

    /// The text served at `/metrics`: this process live plus every other worker.
    /// Blocking (file I/O when workers share a directory).
    pub fn scrape(&self) -> String {
        let own = self.snapshot();
        let (mut merged, live, sup) = match &self.dir {
            Some(dir) => {
                // Persist first, so what this scrape reports never goes down later.
                if let Err(e) = snapshot::write_snapshot(dir, &own) {
                    tracing::debug!(error = %e, "cannot write the metrics snapshot");
                }
                snapshot::merge_dir(dir, &own)
            }
            None => (own, 1, None),
        };
        let sup = sup.unwrap_or(SupervisorStats {
            workers: live,
            restarts: 0,
        });
        let ns = &self.namespace;
        merged.add(
            &format!("{ns}_workers"),
            Kind::Gauge,
            "Worker processes serving.",
            String::new(),
            Value::Number(sup.workers as f64),
        );
        merged.add(
            &format!("{ns}_worker_restarts_total"),
            Kind::Counter,
            "Worker processes restarted by the supervisor.",
            String::new(),
            Value::Number(sup.restarts as f64),
        );
        merged.add(
            &format!("{}uptime_seconds", self.prefix),
            Kind::Gauge,
            "Seconds since this worker started serving (the answering worker).",
            String::new(),
            Value::Number(self.started.elapsed().as_secs_f64().floor()),
        );
        merged.render()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Put in a routed request's extensions by the pipeline; an endpoint that queues
/// requests (the Python runtime) calls [`QueueClock::dequeued`] when it takes one.
#[derive(Debug)]
pub struct QueueClock {
    created: Instant,
    enqueued_ns: AtomicU64,
    queued_ns: AtomicU64,
    request_size: AtomicU64,
}

impl QueueClock {
    /// Start the clock.
    pub fn start() -> Arc<Self> {
        Arc::new(Self {
            created: Instant::now(),
            enqueued_ns: AtomicU64::new(0),
            queued_ns: AtomicU64::new(0),
            request_size: AtomicU64::new(0),
        })
    }

    /// The body (`size` bytes) was read; the request goes to its endpoint now.
    pub fn enqueued(&self, size: u64) {
        self.request_size.store(size, Ordering::Relaxed);
        self.enqueued_ns.store(nanos(self.created.elapsed()), Ordering::Release);
    }

    /// Request body bytes read (0 before [`QueueClock::enqueued`]).
    pub fn request_size(&self) -> u64 {
        self.request_size.load(Ordering::Relaxed)
    }

    /// The request left the queue now.
    pub fn dequeued(&self) {
        self.queued_ns
            .store(nanos(self.created.elapsed()).max(1), Ordering::Release);
    }

    /// (queue time, handler time) once dequeued.
    pub fn split(&self) -> Option<(Duration, Duration)> {
        let q = self.queued_ns.load(Ordering::Acquire);
        (q > 0).then(|| {
            let from = Duration::from_nanos(self.enqueued_ns.load(Ordering::Acquire));
            let q = Duration::from_nanos(q);
            (q.saturating_sub(from), self.created.elapsed().saturating_sub(q))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmatched_paths_share_one_series() {
        let m = Metrics::new(&ServerConfig::default(), 1);
        let t: Arc<str> = Arc::from("/users/{id}");
        for i in 0..1000 {
            m.request_started(&Method::GET);
            let route = if i % 2 == 0 {
                RouteKey::Unmatched
            } else {
                RouteKey::Matched { index: 0, template: &t }
            };
            let status = if i % 2 == 0 { 404 } else { 200 };
            m.request_finished(&Sample {
                route,
                method: &Method::GET,
                status,
                duration: Duration::from_millis(3),
                request_size: 10,
                response_size: Some(20),
            });
        }
        let text = m.scrape();
        let series = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .collect::<Vec<_>>();
        assert_eq!(series.len(), 2, "{text}");
        assert!(text.contains(
            "http_server_request_duration_seconds_count{http_request_method=\"GET\",http_response_status_code=\"404\",http_route=\"\"} 500"
        ), "{text}");
        assert!(text.contains("http_route=\"/users/{id}\"} 500"), "{text}");
        assert!(
            text.contains("http_server_active_requests{http_request_method=\"GET\"} 0"),
            "{text}"
        );
        assert!(text.contains("le=\"0.005\"} 500"), "{text}");
        assert!(text.contains("cello_workers 1\n"), "{text}");
    }

    #[test]
    fn many_statuses_overflow_without_loss() {
        let m = Metrics::new(&ServerConfig::default(), 1);
        let t: Arc<str> = Arc::from("/x");
        for status in 200..220u16 {
            m.request_started(&Method::POST);
            m.request_finished(&Sample {
                route: RouteKey::Matched { index: 0, template: &t },
                method: &Method::POST,
                status,
                duration: Duration::ZERO,
                request_size: 0,
                response_size: None,
            });
        }
        let text = m.scrape();
        let n = text
            .lines()
            .filter(|l| l.starts_with("http_server_request_duration_seconds_count"))
            .count();
        assert_eq!(n, 20, "{text}");
    }
}
