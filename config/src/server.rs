use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Error, Result};

/// Everything the data plane needs to serve: listener, limits, timeouts, protocols.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// TCP port to bind.
    pub port: u16,
    /// Development mode: tracebacks in 500 bodies, access log on.
    pub debug: bool,
    /// Request size and connection limits.
    pub limits: LimitsConfig,
    /// Read, write, idle and handler timeouts.
    pub timeouts: TimeoutConfig,
    /// HTTP/2 settings (cleartext prior knowledge and ALPN `h2`).
    pub http2: Http2Config,
    /// Bounded pool for blocking sync handlers.
    pub threadpool: ThreadPoolConfig,
    /// Peers (IP addresses or CIDR ranges) whose `Forwarded`/`X-Forwarded-*` headers are trusted.
    #[serde(alias = "trusted_proxies")]
    pub trusted_proxies: Vec<String>,
    /// Path prefix the app is mounted under behind a proxy (ASGI `root_path`).
    #[serde(alias = "root_path")]
    pub root_path: String,
    /// Log one line per request on `cello.access`.
    #[serde(alias = "access_log")]
    pub access_log: bool,
    /// Prometheus metrics endpoint.
    pub prometheus: crate::PrometheusConfig,
    /// Health probes.
    pub health: crate::HealthConfig,
    /// OpenTelemetry tracing.
    pub telemetry: crate::TelemetryConfig,
    /// WebSocket keep-alive, limits and buffering.
    pub websocket: crate::WebSocketConfig,
    /// TLS termination (rustls): certificate, key, versions, client certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::TlsConfig>,
    /// HTTP/3 over QUIC on the same port number (UDP); needs `tls`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http3: Option<crate::Http3Config>,
    /// JWT verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwt: Option<crate::JwtConfig>,
    /// API keys.
    #[serde(alias = "api_key", skip_serializing_if = "Option::is_none")]
    pub api_key: Option<crate::ApiKeyConfig>,
    /// HTTP Basic authentication.
    #[serde(alias = "basic_auth", skip_serializing_if = "Option::is_none")]
    pub basic_auth: Option<crate::BasicAuthConfig>,
    /// Rate limiting.
    #[serde(alias = "rate_limit", skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<crate::RateLimitConfig>,
    /// Sessions (`request.session`): cookie, memory or Redis store.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<crate::SessionConfig>,
    /// CSRF protection (double-submit HMAC tokens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf: Option<crate::CsrfConfig>,
    /// Security response headers (present: on).
    #[serde(alias = "security_headers", skip_serializing_if = "Option::is_none")]
    pub security_headers: Option<crate::SecurityHeadersConfig>,
    /// CORS (present: on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::CorsConfig>,
    /// Response compression (present: on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<crate::CompressionConfig>,
    /// Request ids (present: on).
    #[serde(alias = "request_id", skip_serializing_if = "Option::is_none")]
    pub request_id: Option<crate::RequestIdConfig>,
    /// ETags and conditional requests (present: on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etag: Option<crate::EtagConfig>,
    /// Access-log filtering and format (the log itself is `accessLog`).
    #[serde(alias = "access_log_options", skip_serializing_if = "Option::is_none")]
    pub access_log_options: Option<crate::AccessLogConfig>,
    /// Static directories served by Rust on the I/O thread: one mount or a list.
    #[serde(
        alias = "static_files",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "crate::web::one_or_many"
    )]
    pub static_files: Vec<crate::StaticFilesConfig>,
    /// In-memory response cache (moka), per worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::CacheConfig>,
    /// One circuit breaker per route template.
    #[serde(alias = "circuit_breaker", skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<crate::CircuitBreakerConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8000,
            debug: false,
            limits: LimitsConfig::default(),
            timeouts: TimeoutConfig::default(),
            http2: Http2Config::default(),
            threadpool: ThreadPoolConfig::default(),
            trusted_proxies: Vec::new(),
            root_path: String::new(),
            access_log: false,
            prometheus: crate::PrometheusConfig::default(),
            health: crate::HealthConfig::default(),
            telemetry: crate::TelemetryConfig::default(),
            websocket: crate::WebSocketConfig::default(),
            tls: None,
            http3: None,
            jwt: None,
            api_key: None,
            basic_auth: None,
            rate_limit: None,
            session: None,
            csrf: None,
            security_headers: None,
            cors: None,
            compression: None,
            request_id: None,
            etag: None,
            access_log_options: None,
            static_files: Vec::new(),
            cache: None,
            circuit_breaker: None,
        }
    }
}

impl ServerConfig {
    /// Parse from JSON (as the Python layer sends it) and validate.
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parse from YAML (`cello.yaml`) and validate.
    pub fn from_yaml(text: &str) -> Result<Self> {
        let cfg: Self = serde_yaml::from_str(text).map_err(|e| Error::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Cross-field and range checks; the error names the field.
    pub fn validate(&self) -> Result<()> {
        self.limits.validate()?;
        self.timeouts.validate()?;
        self.http2.validate()?;
        self.threadpool.validate()?;
        self.prometheus.validate()?;
        self.health.validate()?;
        self.telemetry.validate()?;
        self.websocket.validate()?;
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        if let Some(h3) = &self.http3 {
            h3.validate()?;
            if self.tls.is_none() {
                return Err(invalid(
                    "http3",
                    "HTTP/3 needs the `tls` section (QUIC is always encrypted, with the same certificate)",
                ));
            }
            if h3.enable_0rtt {
                return Err(invalid(
                    "http3.enable0rtt",
                    "0-RTT is not supported (replayable requests); leave enable_0rtt false",
                ));
            }
        }
        for p in &self.trusted_proxies {
            if parse_cidr(p).is_none() {
                return Err(invalid(
                    "trustedProxies",
                    format!("`{p}` is not an IP address or CIDR range"),
                ));
            }
        }
        if !self.root_path.is_empty() && !self.root_path.starts_with('/') {
            return Err(invalid("rootPath", "must start with `/`"));
        }
        crate::web::validate_mounts(&self.static_files)?;
        if let Some(c) = &self.cache {
            c.validate()?;
        }
        if let Some(b) = &self.circuit_breaker {
            b.validate()?;
        }
        if let Some(c) = &self.security_headers {
            c.validate()?;
        }
        if let Some(c) = &self.cors {
            c.validate()?;
        }
        if let Some(c) = &self.compression {
            c.validate()?;
        }
        if let Some(c) = &self.request_id {
            c.validate()?;
        }
        if let Some(c) = &self.access_log_options {
            c.validate()?;
        }
        if let Some(jwt) = &self.jwt {
            jwt.validate()?;
        }
        if let Some(k) = &self.api_key {
            k.validate()?;
        }
        if let Some(b) = &self.basic_auth {
            b.validate()?;
        }
        if let Some(r) = &self.rate_limit {
            r.validate()?;
            r.validate_backend()?;
        }
        if let Some(s) = &self.session {
            s.validate()?;
        }
        if let Some(c) = &self.csrf {
            c.validate()?;
        }
        Ok(())
    }
}

/// Parse `10.0.0.0/8`, `::1` or `127.0.0.1` into (address, prefix length).
pub fn parse_cidr(text: &str) -> Option<(std::net::IpAddr, u8)> {
    let (addr, len) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let ip: std::net::IpAddr = addr.trim().parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l.trim().parse::<u8>().ok().filter(|l| *l <= max)?,
        None => max,
    };
    Some((ip, len))
}

/// Request size and connection limits (`LimitsConfig` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest request head (request line + headers) in bytes; larger → 431.
    #[serde(alias = "max_header_size")]
    #[schemars(range(min = 1024))]
    pub max_header_size: u64,
    /// Largest request body in bytes; larger → 413, checked while reading.
    #[serde(alias = "max_body_size")]
    pub max_body_size: u64,
    /// Open connections per worker; further connections get 503 and are closed.
    #[serde(alias = "max_connections")]
    #[schemars(range(min = 1))]
    pub max_connections: u64,
    /// Requests served on one keep-alive connection before it is closed (0: unlimited).
    #[serde(alias = "max_requests_per_connection")]
    pub max_requests_per_connection: u64,
    /// Most header fields in one request; more → 431.
    #[serde(alias = "max_headers")]
    #[schemars(range(min = 1))]
    pub max_headers: u64,
    /// Requests waiting for the Python thread of a worker; further requests get 503
    /// (problem+json) at once instead of queueing behind a slow or stuck handler.
    #[serde(alias = "max_queued_requests")]
    #[schemars(range(min = 1))]
    pub max_queued_requests: u64,
    /// Open connections one client IP address may hold per worker; further connections get
    /// 429 and are closed. Unset: no per-address cap (`CELLO_MAX_CONNECTIONS_PER_IP`).
    #[serde(alias = "max_connections_per_ip", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections_per_ip: Option<u64>,
    /// Budget, per worker, for request bodies held in memory (all requests together);
    /// a body that would exceed it gets 503 (0: no budget).
    #[serde(alias = "max_buffered_bytes")]
    pub max_buffered_bytes: u64,
    /// Most parts (fields and files) in one `multipart/form-data` body; more → 413.
    #[serde(alias = "max_form_parts")]
    #[schemars(range(min = 1))]
    pub max_form_parts: u64,
    /// Largest text field of a form body, in bytes; larger → 413.
    #[serde(alias = "max_form_field_size")]
    pub max_form_field_size: u64,
    /// Largest file part of a multipart body, in bytes; larger → 413. Unset: `maxBodySize`.
    #[serde(alias = "max_form_file_size")]
    pub max_form_file_size: Option<u64>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_header_size: 8192,
            max_body_size: 10 * 1024 * 1024,
            max_connections: 10_000,
            max_requests_per_connection: 1000,
            max_headers: 100,
            max_queued_requests: 4096,
            max_connections_per_ip: None,
            max_buffered_bytes: 256 * 1024 * 1024,
            max_form_parts: 1000,
            max_form_field_size: 1024 * 1024,
            max_form_file_size: None,
        }
    }
}

impl LimitsConfig {
    pub fn validate(&self) -> Result<()> {
        if self.max_header_size < 1024 {
            return Err(invalid("limits.maxHeaderSize", "must be at least 1024 bytes"));
        }
        if self.max_connections == 0 {
            return Err(invalid("limits.maxConnections", "must be at least 1"));
        }
        if self.max_headers == 0 {
            return Err(invalid("limits.maxHeaders", "must be at least 1"));
        }
        if self.max_queued_requests == 0 {
            return Err(invalid("limits.maxQueuedRequests", "must be at least 1"));
        }
        if self.max_form_parts == 0 {
            return Err(invalid("limits.maxFormParts", "must be at least 1"));
        }
        if self.max_connections_per_ip == Some(0) {
            return Err(invalid(
                "limits.maxConnectionsPerIp",
                "must be at least 1 (leave it unset for no cap)",
            ));
        }
        Ok(())
    }
}

/// Timeouts in seconds (`TimeoutConfig` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Time allowed to receive a complete request head; slower clients are cut off.
    #[serde(alias = "read_header")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub read_header: f64,
    /// Time allowed to receive the whole request body → 408.
    #[serde(alias = "read_body")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub read_body: f64,
    /// Time allowed for writing a response.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub write: f64,
    /// Keep-alive connections idle this long are closed.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub idle: f64,
    /// A handler running longer than this gets a 504 for its request.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub handler: f64,
    /// The Python thread of a worker that has not turned its event loop for this long is
    /// stuck: `/health/live` answers 503 and the supervisor replaces the worker.
    #[serde(alias = "worker_timeout")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub worker_timeout: f64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        Self {
            read_header: 5.0,
            read_body: 30.0,
            write: 30.0,
            idle: 60.0,
            handler: 30.0,
            worker_timeout: 30.0,
        }
    }
}

impl TimeoutConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("timeouts.readHeader", self.read_header),
            ("timeouts.readBody", self.read_body),
            ("timeouts.write", self.write),
            ("timeouts.idle", self.idle),
            ("timeouts.handler", self.handler),
            ("timeouts.workerTimeout", self.worker_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(name, "must be a positive number of seconds"));
            }
        }
        Ok(())
    }
}

/// HTTP/2 settings (`Http2Config` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Http2Config {
    /// Concurrent streams per connection.
    #[serde(alias = "max_concurrent_streams")]
    #[schemars(range(min = 1))]
    pub max_concurrent_streams: u32,
    /// Initial stream flow-control window in bytes.
    #[serde(alias = "initial_window_size")]
    #[schemars(range(max = 2_147_483_647))]
    pub initial_window_size: u32,
    /// Largest frame payload in bytes (16 KiB to 16 MiB).
    #[serde(alias = "max_frame_size")]
    #[schemars(range(min = 16_384, max = 16_777_215))]
    pub max_frame_size: u32,
    /// Server push; accepted for compatibility, browsers removed push so it is never used.
    #[serde(alias = "enable_push")]
    pub enable_push: bool,
    /// Seconds between HTTP/2 PING frames that check the peer is alive (unset: no pings).
    #[serde(alias = "keep_alive_interval")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub keep_alive_interval: Option<f64>,
    /// Seconds to wait for a PING's acknowledgement before closing the connection.
    #[serde(alias = "keep_alive_timeout")]
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub keep_alive_timeout: f64,
    /// Response bytes one HTTP/2 connection may hold unsent (streams the peer does not
    /// read); beyond it new streams get 503, and a connection that makes no write progress
    /// for `timeouts.write` is closed (0: no cap).
    #[serde(alias = "max_buffered_per_connection")]
    pub max_buffered_per_connection: u64,
    /// The same, for all HTTP/2 connections of a worker together (0: no cap).
    #[serde(alias = "max_buffered_total")]
    pub max_buffered_total: u64,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 100,
            initial_window_size: 1_048_576,
            max_frame_size: 16_384,
            enable_push: false,
            keep_alive_interval: None,
            keep_alive_timeout: 20.0,
            max_buffered_per_connection: 16 * 1024 * 1024,
            max_buffered_total: 256 * 1024 * 1024,
        }
    }
}

impl Http2Config {
    pub fn validate(&self) -> Result<()> {
        if !(16_384..=16_777_215).contains(&self.max_frame_size) {
            return Err(invalid("http2.maxFrameSize", "must be between 16384 and 16777215"));
        }
        if self.initial_window_size > 2_147_483_647 {
            return Err(invalid("http2.initialWindowSize", "must be at most 2^31-1"));
        }
        if self.max_concurrent_streams == 0 {
            return Err(invalid("http2.maxConcurrentStreams", "must be at least 1"));
        }
        for (name, v) in [
            ("http2.keepAliveInterval", self.keep_alive_interval),
            ("http2.keepAliveTimeout", Some(self.keep_alive_timeout)),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                return Err(invalid(name, "must be a positive number of seconds"));
            }
        }
        Ok(())
    }
}

/// Bounded pool for blocking sync handlers (`ThreadPoolConfig` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ThreadPoolConfig {
    /// Threads in the pool.
    #[schemars(range(min = 1, max = 4096))]
    pub size: u32,
    /// With `adaptive`, a sync handler observed to run longer than this moves to the pool.
    #[serde(alias = "offload_threshold_ms")]
    pub offload_threshold_ms: u64,
    /// Move slow sync handlers to the pool automatically.
    pub adaptive: bool,
}

impl Default for ThreadPoolConfig {
    fn default() -> Self {
        Self {
            size: 64,
            offload_threshold_ms: 1,
            adaptive: true,
        }
    }
}

impl ThreadPoolConfig {
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || self.size > 4096 {
            return Err(invalid("threadpool.size", "must be between 1 and 4096"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        ServerConfig::default().validate().unwrap();
    }

    #[test]
    fn snake_and_camel_case_both_accepted() {
        let a = ServerConfig::from_json(r#"{"limits":{"max_body_size":5}}"#).unwrap();
        let b = ServerConfig::from_json(r#"{"limits":{"maxBodySize":5}}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.limits.max_body_size, 5);
    }

    #[test]
    fn unknown_fields_rejected_with_path() {
        let err = ServerConfig::from_json(r#"{"limits":{"maxBody":5}}"#).unwrap_err();
        assert!(err.to_string().contains("maxBody"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = ServerConfig::from_json(r#"{"timeouts":{"idle":0}}"#).unwrap_err();
        assert!(err.to_string().contains("timeouts.idle"), "{err}");
        let err = ServerConfig::from_json(r#"{"trustedProxies":["nope"]}"#).unwrap_err();
        assert!(err.to_string().contains("trustedProxies"), "{err}");
        let err = ServerConfig::from_json(r#"{"http2":{"maxFrameSize":10}}"#).unwrap_err();
        assert!(err.to_string().contains("maxFrameSize"), "{err}");
    }

    #[test]
    fn cidr_parsing() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().1, 8);
        assert_eq!(parse_cidr("::1").unwrap().1, 128);
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("x").is_none());
    }

    #[test]
    fn yaml_roundtrip() {
        let cfg = ServerConfig::default();
        let text = serde_yaml::to_string(&cfg).unwrap();
        assert_eq!(ServerConfig::from_yaml(&text).unwrap(), cfg);
    }

    #[test]
    fn existing_documents_still_parse() {
        // the shape cello.yaml and CellApp specs had before the new sections
        let yaml = "host: 0.0.0.0\nport: 8080\nlimits:\n  max_body_size: 1024\ntimeouts:\n  readHeader: 2\n\
                    trustedProxies: [10.0.0.0/8]\nhealth:\n  enabled: true\n";
        let cfg = ServerConfig::from_yaml(yaml).unwrap();
        assert_eq!(cfg.limits.max_body_size, 1024);
        assert!(cfg.tls.is_none() && cfg.jwt.is_none());
        let text = serde_json::to_string(&cfg).unwrap();
        assert!(!text.contains("rateLimit"), "absent sections are not written: {text}");
    }

    #[test]
    fn bad_sections_are_refused() {
        let err = ServerConfig::from_json(r#"{"http3":{}}"#).unwrap_err();
        assert!(err.to_string().contains("HTTP/3 needs the `tls` section"), "{err}");
        let err = ServerConfig::from_json(r#"{"jwt":{"secrett":"x"}}"#).unwrap_err();
        assert!(err.to_string().contains("secrett"), "{err}");
    }

    #[test]
    fn static_files_take_one_mount_or_a_list() {
        let one = ServerConfig::from_json(r#"{"staticFiles":{"root":"public"}}"#).unwrap();
        assert_eq!(one.static_files.len(), 1);
        assert_eq!(one.static_files[0].prefix, "/static");
        let two = ServerConfig::from_yaml(
            "static_files:\n  - {root: a, prefix: /a}\n  - {root: b, prefix: /b, cacheControl: max-age=60}\n",
        )
        .unwrap();
        assert_eq!(two.static_files[1].cache_control.as_deref(), Some("max-age=60"));
        let err = ServerConfig::from_json(r#"{"staticFiles":[{"root":"a"},{"root":"b"}]}"#).unwrap_err();
        assert!(err.to_string().contains("staticFiles"), "{err}");
        let err = ServerConfig::from_json(r#"{"staticFiles":{"root":""}}"#).unwrap_err();
        assert!(err.to_string().contains("root"), "{err}");
    }

    #[test]
    fn auth_and_rate_limit_sections_are_validated() {
        let ok = ServerConfig::from_json(r#"{"jwt":{"secret":"0123456789abcdef0123456789abcdef"},"rate_limit":{}}"#);
        assert!(ok.is_ok(), "{ok:?}");
        for (doc, what) in [
            (r#"{"jwt":{"secret":"short"}}"#, "at least 32 bytes"),
            (r#"{"apiKey":{"keys":{}}}"#, "at least one key"),
            (r#"{"basicAuth":{}}"#, "users or a verify"),
            (r#"{"rateLimit":{"backend":"disk"}}"#, "backend"),
            (
                r#"{"rateLimit":{"routes":{"/x":{"algorithm":"token_bucket","capacity":0}}}}"#,
                "route /x",
            ),
        ] {
            let err = ServerConfig::from_json(doc).unwrap_err();
            assert!(err.to_string().contains(what), "{doc}: {err}");
        }
    }

    #[test]
    fn schema_is_generated() {
        let schema = schemars::schema_for!(ServerConfig);
        let text = serde_json::to_string(&schema).unwrap();
        assert!(text.contains("maxBodySize"));
    }
}
