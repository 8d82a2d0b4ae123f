//! Observability settings: Prometheus metrics, health probes and OpenTelemetry tracing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

fn check_path(field: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(invalid(field, "must be a URL path starting with `/`"));
    }
    Ok(())
}

fn check_prefix(field: &str, name: &str) -> Result<()> {
    let ok =
        name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !name.starts_with(|c: char| c.is_ascii_digit());
    if !ok {
        return Err(invalid(field, "must match [a-zA-Z_][a-zA-Z0-9_]*"));
    }
    Ok(())
}

/// Prometheus `/metrics` (`app.enable_prometheus()` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct PrometheusConfig {
    /// Serve the metrics endpoint and record request metrics.
    pub enabled: bool,
    /// Path of the metrics endpoint, answered before routing.
    pub endpoint: String,
    /// Prefix of Cello's own (`cello_*`) metrics.
    pub namespace: String,
    /// Second prefix of Cello's per-request runtime metrics (`{namespace}_{subsystem}_...`).
    pub subsystem: String,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            endpoint: "/metrics".into(),
            namespace: "cello".into(),
            subsystem: "http".into(),
        }
    }
}

impl PrometheusConfig {
    /// Range and syntax checks.
    pub fn validate(&self) -> Result<()> {
        check_path("prometheus.endpoint", &self.endpoint)?;
        if self.namespace.is_empty() {
            return Err(invalid("prometheus.namespace", "must not be empty"));
        }
        check_prefix("prometheus.namespace", &self.namespace)?;
        check_prefix("prometheus.subsystem", &self.subsystem)
    }
}

/// Health probes (`app.enable_health_checks(HealthCheckConfig)` in Python).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthConfig {
    /// Serve `{basePath}/live`, `/ready` and `/startup`.
    pub enabled: bool,
    /// Prefix of the probe paths.
    #[serde(alias = "base_path")]
    pub base_path: String,
    /// Per-check status in the JSON bodies.
    #[serde(alias = "include_details")]
    pub include_details: bool,
    /// Process id, uptime and version in the JSON bodies.
    #[serde(alias = "include_system_info")]
    pub include_system_info: bool,
    /// Application version reported in the bodies.
    pub version: Option<String>,
    /// Time each readiness check may take before it counts as failed.
    #[serde(alias = "timeout_secs")]
    pub timeout_secs: f64,
    /// Reuse readiness results for this long (0: run the checks on every probe).
    #[serde(alias = "cache_secs")]
    pub cache_secs: f64,
    /// After SIGTERM, keep accepting this long with `/ready` answering 503, so load
    /// balancers stop sending traffic before the listener closes.
    #[serde(alias = "drain_delay_secs")]
    pub drain_delay_secs: f64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            base_path: "/health".into(),
            include_details: true,
            include_system_info: false,
            version: None,
            timeout_secs: 5.0,
            cache_secs: 0.0,
            drain_delay_secs: 0.0,
        }
    }
}

impl HealthConfig {
    /// Range and syntax checks.
    pub fn validate(&self) -> Result<()> {
        check_path("health.basePath", &self.base_path)?;
        if !(self.timeout_secs.is_finite() && self.timeout_secs > 0.0) {
            return Err(invalid("health.timeoutSecs", "must be a positive number of seconds"));
        }
        for (name, v) in [
            ("health.cacheSecs", self.cache_secs),
            ("health.drainDelaySecs", self.drain_delay_secs),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(invalid(name, "must be zero or a positive number of seconds"));
            }
        }
        Ok(())
    }
}

/// OpenTelemetry tracing (`app.enable_telemetry(OpenTelemetryConfig)` in Python). Unset
/// fields fall back to the standard `OTEL_*` environment variables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Create a server span per request and export spans over OTLP.
    pub enabled: bool,
    /// `service.name` (else `OTEL_SERVICE_NAME`, else `cello`).
    #[serde(alias = "service_name")]
    pub service_name: Option<String>,
    /// `service.version`.
    #[serde(alias = "service_version")]
    pub service_version: Option<String>,
    /// Collector URL (else `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`).
    #[serde(alias = "otlp_endpoint")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf` (else `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`).
    pub protocol: Option<String>,
    /// Fraction of new traces that are recorded (requests with a parent follow its decision).
    #[serde(alias = "sampling_rate")]
    pub sampling_rate: Option<f64>,
    /// Export spans (off: propagate context only).
    #[serde(alias = "export_traces")]
    pub export_traces: bool,
    /// Accepted for compatibility: metrics are exposed through Prometheus.
    #[serde(alias = "export_metrics")]
    pub export_metrics: bool,
    /// Paths (exact, or prefixes ending in `*`) that get no span.
    #[serde(alias = "excluded_paths")]
    pub excluded_paths: Vec<String>,
    /// Add `traceparent` (and `tracestate`) of the server span to responses.
    #[serde(alias = "propagate_response")]
    pub propagate_response: bool,
    /// Spans waiting for export at most; more are dropped (never blocking requests).
    #[serde(alias = "max_queue_size")]
    pub max_queue_size: usize,
    /// How long one export may take before it is abandoned.
    #[serde(alias = "export_timeout_secs")]
    pub export_timeout_secs: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            service_name: None,
            service_version: None,
            otlp_endpoint: None,
            protocol: None,
            sampling_rate: None,
            export_traces: true,
            export_metrics: true,
            excluded_paths: Vec::new(),
            propagate_response: false,
            max_queue_size: 2048,
            export_timeout_secs: 10.0,
        }
    }
}

impl TelemetryConfig {
    /// Range and syntax checks.
    pub fn validate(&self) -> Result<()> {
        if let Some(rate) = self.sampling_rate {
            if !(0.0..=1.0).contains(&rate) {
                return Err(invalid("telemetry.samplingRate", "must be between 0 and 1"));
            }
        }
        if let Some(p) = &self.protocol {
            if !matches!(p.as_str(), "grpc" | "http/protobuf" | "http") {
                return Err(invalid("telemetry.protocol", "must be `grpc` or `http/protobuf`"));
            }
        }
        if self.max_queue_size == 0 {
            return Err(invalid("telemetry.maxQueueSize", "must be at least 1"));
        }
        if !(self.export_timeout_secs.is_finite() && self.export_timeout_secs > 0.0) {
            return Err(invalid(
                "telemetry.exportTimeoutSecs",
                "must be a positive number of seconds",
            ));
        }
        for p in &self.excluded_paths {
            check_path("telemetry.excludedPaths", p)?;
        }
        Ok(())
    }
}

/// `OpenTelemetryConfig` of the Python API: what `app.enable_telemetry()` takes. It becomes the
/// `telemetry` section of [`crate::ServerConfig`] ([`TelemetryConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct OpenTelemetryConfig {
    /// `service.name`.
    #[schemars(length(min = 1))]
    pub service_name: String,
    /// `service.version`.
    pub service_version: String,
    /// Collector URL (else the `OTEL_*` variables).
    pub otlp_endpoint: Option<String>,
    /// Fraction of new traces recorded.
    #[schemars(range(min = 0, max = 1))]
    pub sampling_rate: f64,
    /// Export spans (off: propagate context only).
    pub export_traces: bool,
    /// Export metrics over OTLP.
    pub export_metrics: bool,
    /// Paths (exact, or prefixes ending in `*`) that get no span.
    pub excluded_paths: Vec<String>,
}

impl Default for OpenTelemetryConfig {
    fn default() -> Self {
        Self {
            service_name: String::new(),
            service_version: "0.1.0".into(),
            otlp_endpoint: None,
            sampling_rate: 1.0,
            export_traces: true,
            export_metrics: true,
            excluded_paths: Vec::new(),
        }
    }
}

impl OpenTelemetryConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        crate::check::check_fields("", self)
    }
}

/// `HealthCheckConfig` of the Python API: what `app.enable_health_checks()` takes. It becomes
/// the `health` section of [`crate::ServerConfig`] ([`HealthConfig`], whose defaults it shares).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// Prefix of the probe paths.
    #[schemars(regex(pattern = r"^/"))]
    pub base_path: String,
    /// Per-check status in the JSON bodies.
    pub include_details: bool,
    /// Process id, uptime and version in the JSON bodies.
    pub include_system_info: bool,
    /// Application version reported in the bodies.
    pub version: Option<String>,
    /// Seconds each readiness check may take.
    #[schemars(range(min = 0), extend("exclusiveMinimum" = true))]
    pub timeout_secs: f64,
    /// Reuse readiness results for this long (unset: run the checks on every probe).
    #[schemars(range(min = 0))]
    pub cache_secs: Option<f64>,
}

impl Default for HealthCheckConfig {
    fn default() -> Self {
        let server = HealthConfig::default();
        Self {
            base_path: server.base_path,
            include_details: server.include_details,
            include_system_info: server.include_system_info,
            version: server.version,
            timeout_secs: server.timeout_secs,
            cache_secs: None,
        }
    }
}

impl HealthCheckConfig {
    /// Field ranges.
    pub fn validate(&self) -> Result<()> {
        crate::check::check_fields("", self)
    }
}

#[cfg(test)]
mod tests {
    use crate::ServerConfig;

    #[test]
    fn defaults_are_off_and_valid() {
        let cfg = ServerConfig::default();
        assert!(!cfg.prometheus.enabled && !cfg.health.enabled && !cfg.telemetry.enabled);
        cfg.validate().unwrap();
    }

    #[test]
    fn snake_case_aliases() {
        let cfg = ServerConfig::from_json(
            r#"{"prometheus":{"enabled":true,"endpoint":"/m"},"health":{"base_path":"/hc","cache_secs":2},
                "telemetry":{"enabled":true,"sampling_rate":0.5,"excluded_paths":["/health*"]}}"#,
        )
        .unwrap();
        assert_eq!(cfg.prometheus.endpoint, "/m");
        assert_eq!(cfg.health.base_path, "/hc");
        assert!((cfg.health.cache_secs - 2.0).abs() < f64::EPSILON);
        assert_eq!(cfg.telemetry.sampling_rate, Some(0.5));
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = ServerConfig::from_json(r#"{"prometheus":{"endpoint":"metrics"}}"#).unwrap_err();
        assert!(err.to_string().contains("prometheus.endpoint"), "{err}");
        let err = ServerConfig::from_json(r#"{"prometheus":{"namespace":"a-b"}}"#).unwrap_err();
        assert!(err.to_string().contains("prometheus.namespace"), "{err}");
        let err = ServerConfig::from_json(r#"{"telemetry":{"samplingRate":2}}"#).unwrap_err();
        assert!(err.to_string().contains("samplingRate"), "{err}");
        let err = ServerConfig::from_json(r#"{"health":{"timeoutSecs":0}}"#).unwrap_err();
        assert!(err.to_string().contains("health.timeoutSecs"), "{err}");
    }
}
