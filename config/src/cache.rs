//! Response cache and circuit breaker: the two layers that sit in front of the router and
//! keep traffic away from handlers (`enable_caching`, `enable_circuit_breaker`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::check_fields;
use crate::error::{invalid, Result};

/// In-memory response cache, per worker (`app.enable_caching(...)`, `@cache(...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheConfig {
    /// Seconds a response stays fresh (routes may set their own).
    #[schemars(range(min = 1))]
    pub ttl: u64,
    /// Request methods whose responses are cached (`GET`, `HEAD` by default).
    pub methods: Vec<String>,
    /// Path prefixes never cached.
    #[serde(alias = "exclude_paths")]
    pub exclude_paths: Vec<String>,
    /// Cache every route (`enable_caching`); when false only the `routes` listed are cached.
    #[serde(alias = "all_routes")]
    pub all_routes: bool,
    /// Route templates with their own TTL and tags (`@cache(ttl=..., tags=...)`).
    pub routes: Vec<CacheRoute>,
    /// Most entries kept.
    #[serde(alias = "max_entries")]
    #[schemars(range(min = 1))]
    pub max_entries: u64,
    /// Most body bytes kept, all entries together.
    #[serde(alias = "max_bytes")]
    #[schemars(range(min = 1))]
    pub max_bytes: u64,
    /// Larger bodies (or bodies of unknown length) are passed through, not cached.
    #[serde(alias = "max_entry_bytes")]
    #[schemars(range(min = 1))]
    pub max_entry_bytes: u64,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl: 300,
            methods: vec!["GET".into(), "HEAD".into()],
            exclude_paths: Vec::new(),
            all_routes: true,
            routes: Vec::new(),
            max_entries: 10_000,
            max_bytes: 64 * 1024 * 1024,
            max_entry_bytes: 1024 * 1024,
        }
    }
}

/// One route's cache settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CacheRoute {
    /// The route template as registered (`/items/{id:int}`).
    pub template: String,
    /// Its TTL in seconds (the cache's `ttl` when unset).
    #[schemars(range(min = 1))]
    pub ttl: Option<u64>,
    /// Tags for `app.invalidate_cache(tags)`.
    pub tags: Vec<String>,
}

impl Default for CacheRoute {
    fn default() -> Self {
        Self {
            template: "/".into(),
            ttl: None,
            tags: Vec::new(),
        }
    }
}

impl CacheConfig {
    /// Ranges, methods and paths.
    pub fn validate(&self) -> Result<()> {
        check_fields("cache", self)?;
        if self.max_entry_bytes > self.max_bytes {
            return Err(invalid("cache.maxEntryBytes", "must not exceed cache.maxBytes"));
        }
        for m in &self.methods {
            if !matches!(m.to_ascii_uppercase().as_str(), "GET" | "HEAD" | "POST" | "OPTIONS") {
                return Err(invalid(
                    "cache.methods",
                    format!("{m:?} cannot be cached (GET, HEAD, POST or OPTIONS)"),
                ));
            }
        }
        for p in &self.exclude_paths {
            if !p.starts_with('/') {
                return Err(invalid("cache.excludePaths", format!("{p:?} must start with `/`")));
            }
        }
        for r in &self.routes {
            check_fields("cache.routes", r)?;
            if !r.template.starts_with('/') {
                return Err(invalid("cache.routes.template", "must start with `/`"));
            }
        }
        Ok(())
    }
}

/// One breaker per route template (`app.enable_circuit_breaker(...)`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker.
    #[serde(alias = "failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Seconds an open breaker refuses requests before it lets trial requests through.
    #[serde(alias = "reset_timeout")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub reset_timeout: f64,
    /// Successful trial requests that close a half-open breaker.
    #[serde(alias = "half_open_target")]
    #[schemars(range(min = 1))]
    pub half_open_target: u32,
    /// Status codes counted as failures (all 5xx when empty; 503 answers of the breaker
    /// itself never count).
    #[serde(alias = "failure_codes")]
    pub failure_codes: Vec<u16>,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            reset_timeout: 30.0,
            half_open_target: 3,
            failure_codes: Vec::new(),
        }
    }
}

impl CircuitBreakerConfig {
    /// Ranges and status codes.
    pub fn validate(&self) -> Result<()> {
        check_fields("circuitBreaker", self)?;
        if !(self.reset_timeout.is_finite() && self.reset_timeout > 0.0) {
            return Err(invalid(
                "circuitBreaker.resetTimeout",
                "must be a positive number of seconds",
            ));
        }
        for c in &self.failure_codes {
            if !(100..=599).contains(c) {
                return Err(invalid(
                    "circuitBreaker.failureCodes",
                    format!("{c} is not an HTTP status"),
                ));
            }
        }
        Ok(())
    }
}
