//! Health probes and the other built-in endpoints answered before routing.
//!
//! - `{base}/live`: the process serves (never looks at dependencies).
//! - `{base}/ready`: runs the registered checks (a [`HealthChecker`], e.g. the Python
//!   `@app.health_check` functions), each bounded by `timeoutSecs`, results reused for
//!   `cacheSecs`; 503 as soon as a drain starts.
//! - `{base}/startup`: 200 once the server has started (startup hooks done).
//!
//! Also serves the Prometheus endpoint (see [`crate::metrics`]). None of these take the
//! GIL unless a Python check has to run.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cello_config::HealthConfig;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};

use crate::body::ResponseBody;
use crate::service::AppState;

/// The outcome of one readiness check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Passed.
    pub healthy: bool,
    /// Why it failed (or what it reported).
    pub detail: Option<String>,
    /// How long it took.
    pub duration_ms: f64,
}

/// A future of check results.
pub type ChecksFuture = Pin<Box<dyn Future<Output = Vec<CheckResult>> + Send>>;

/// Runs readiness checks (each bounded by `timeout`).
pub trait HealthChecker: Send + Sync {
    /// Run every check.
    fn check(&self, timeout: Duration) -> ChecksFuture;
}

/// Whether the process can still serve: `Err(reason)` turns `/live` 503 (e.g. the
/// Python thread of a worker stopped turning its event loop).
pub type Liveness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// A readiness answer and when it was computed.
type Cached = (Instant, Arc<(StatusCode, Bytes)>);

/// Probe state of one server.
pub struct Health {
    config: HealthConfig,
    live: String,
    ready: String,
    startup: String,
    started: AtomicBool,
    draining: AtomicBool,
    checker: OnceLock<Arc<dyn HealthChecker>>,
    liveness: OnceLock<Liveness>,
    cache: Mutex<Option<Cached>>,
    since: Instant,
}

impl Health {
    /// Probes as `config` says.
    pub fn new(config: HealthConfig) -> Self {
        let base = config.base_path.trim_end_matches('/');
        Self {
            live: format!("{base}/live"),
            ready: format!("{base}/ready"),
            startup: format!("{base}/startup"),
            config,
            started: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            checker: OnceLock::new(),
            liveness: OnceLock::new(),
            cache: Mutex::new(None),
            since: Instant::now(),
        }
    }

    /// Who runs the readiness checks (set once).
    pub fn set_checker(&self, checker: Arc<dyn HealthChecker>) {
        let _ = self.checker.set(checker);
    }

    /// What `/live` asks before it answers 200 (set once).
    pub fn set_liveness(&self, liveness: Liveness) {
        let _ = self.liveness.set(liveness);
    }

    /// The server is up: `/startup` answers 200 from now on.
    pub fn mark_started(&self) {
        self.started.store(true, Ordering::Release);
    }

    /// A drain began: `/ready` answers 503 from now on.
    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether a drain has begun.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// How long to keep accepting after a drain starts.
    pub fn drain_delay(&self) -> Duration {
        Duration::from_secs_f64(self.config.drain_delay_secs)
    }

    fn body(&self, status: &str, extra: Vec<(&str, serde_json::Value)>) -> Bytes {
        let mut obj = serde_json::Map::new();
        obj.insert("status".into(), status.into());
        for (k, v) in extra {
            obj.insert(k.into(), v);
        }
        if let Some(v) = &self.config.version {
            obj.insert("version".into(), v.clone().into());
        }
        if self.config.include_system_info {
            obj.insert(
                "system".into(),
                serde_json::json!({
                    "pid": std::process::id(),
                    "uptime_secs": self.since.elapsed().as_secs_f64(),
                }),
            );
        }
        Bytes::from(serde_json::Value::Object(obj).to_string())
    }

    async fn readiness(&self) -> (StatusCode, Bytes) {
        if self.draining() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                self.body("DOWN", vec![("reason", "draining".into())]),
            );
        }
        let ttl = Duration::from_secs_f64(self.config.cache_secs);
        if !ttl.is_zero() {
            if let Some((at, cached)) = &*self.cache.lock().unwrap_or_else(PoisonError::into_inner) {
                if at.elapsed() < ttl {
                    return (cached.0, cached.1.clone());
                }
            }
        }
        let timeout = Duration::from_secs_f64(self.config.timeout_secs);
        let results = match self.checker.get() {
            Some(c) => {
                // The checker bounds each check; this bounds a stuck runner.
                match tokio::time::timeout(timeout + Duration::from_secs(1), c.check(timeout)).await {
                    Ok(r) => r,
                    Err(_) => vec![CheckResult {
                        name: "checks".into(),
                        healthy: false,
                        detail: Some("the health checks did not finish in time".into()),
                        duration_ms: timeout.as_secs_f64() * 1000.0,
                    }],
                }
            }
            None => Vec::new(),
        };
        let healthy = results.iter().all(|r| r.healthy);
        let mut extra = Vec::new();
        if self.config.include_details {
            let checks: serde_json::Map<String, serde_json::Value> = results
                .iter()
                .map(|r| {
                    let mut c = serde_json::json!({
                        "status": if r.healthy { "UP" } else { "DOWN" },
                        "duration_ms": (r.duration_ms * 1000.0).round() / 1000.0,
                    });
                    if let Some(d) = &r.detail {
                        c["detail"] = d.clone().into();
                    }
                    (r.name.clone(), c)
                })
                .collect();
            extra.push(("checks", serde_json::Value::Object(checks)));
        }
        let status = if healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = self.body(if healthy { "UP" } else { "DOWN" }, extra);
        if !ttl.is_zero() {
            *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((Instant::now(), Arc::new((status, body.clone()))));
        }
        (status, body)
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes, head: bool) -> Response<ResponseBody> {
    let len = HeaderValue::from(body.len());
    let mut r = Response::new(if head {
        ResponseBody::Empty
    } else {
        ResponseBody::Full(Some(body))
    });
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::CONTENT_LENGTH, len);
    r
}

/// Whether `req` is for `/metrics` or a health probe (a cheap check before [`builtin`]).
pub fn is_builtin<B>(state: &AppState, req: &Request<B>) -> bool {
    if !(req.method() == Method::GET || req.method() == Method::HEAD) {
        return false;
    }
    let path = req.uri().path();
    state.metrics.as_ref().is_some_and(|m| m.endpoint == path)
        || state
            .health
            .as_ref()
            .is_some_and(|h| path == h.live || path == h.ready || path == h.startup)
}

/// Answer `/metrics` and the health probes; `None` for every other request.
pub async fn builtin<B>(state: &AppState, req: &Request<B>) -> Option<Response<ResponseBody>> {
    let head = req.method() == Method::HEAD;
    if !(head || req.method() == Method::GET) {
        return None;
    }
    let path = req.uri().path();
    if let Some(m) = state.metrics.as_ref().filter(|m| m.endpoint == path) {
        let m = m.clone();
        let text = match tokio::task::spawn_blocking(move || m.scrape()).await {
            Ok(mut t) => {
                if let Some(b) = &state.breakers {
                    t.push_str(&b.exposition(&state.config.prometheus.namespace));
                }
                t
            }
            Err(_) => {
                return Some(crate::problem::problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics failed",
                ))
            }
        };
        return Some(respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            Bytes::from(text),
            head,
        ));
    }
    let h = state.health.as_ref()?;
    let json = "application/json";
    if path == h.live {
        if let Some(Err(reason)) = h.liveness.get().map(|f| f()) {
            let body = h.body("DOWN", vec![("reason", reason.into())]);
            return Some(respond(StatusCode::SERVICE_UNAVAILABLE, json, body, head));
        }
        return Some(respond(StatusCode::OK, json, h.body("UP", Vec::new()), head));
    }
    if path == h.startup {
        let (status, text) = if h.started.load(Ordering::Acquire) {
            (StatusCode::OK, "UP")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "DOWN")
        };
        return Some(respond(status, json, h.body(text, Vec::new()), head));
    }
    if path == h.ready {
        let (status, body) = h.readiness().await;
        return Some(respond(status, json, body, head));
    }
    None
}

/// The server started serving: mark startup done, start the tracing pipeline and the
/// periodic metrics snapshot (when workers share `$CELLO_METRICS_DIR`). Call inside
/// the I/O runtime.
pub fn on_start(state: &Arc<AppState>) {
    if let Some(h) = &state.health {
        h.mark_started();
    }
    if let Some(t) = &state.telemetry {
        t.start();
    }
    if let Some(m) = state.metrics.clone().filter(|m| m.dir().is_some()) {
        let weak = Arc::downgrade(&m);
        drop(m);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { break };
                let _ = tokio::task::spawn_blocking(move || m.persist()).await;
            }
        });
    }
}

/// A drain is starting (SIGTERM): `/ready` turns 503. Returns how long the listener
/// should stay open before it stops accepting (`drainDelaySecs`).
pub fn begin_drain(state: &AppState) -> Duration {
    state.health.as_ref().map_or(Duration::ZERO, |h| {
        h.begin_drain();
        h.drain_delay()
    })
}

/// The server stopped: write the final metrics snapshot and flush queued spans
/// (blocking, at most `timeout` for the spans).
pub fn on_stop(state: &AppState, timeout: Duration) {
    if let Some(m) = &state.metrics {
        m.persist();
    }
    if let Some(t) = &state.telemetry {
        t.shutdown(timeout);
    }
}
