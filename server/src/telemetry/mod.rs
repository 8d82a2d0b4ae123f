//! OpenTelemetry tracing: one server span per request, W3C trace context in and out,
//! OTLP export (gRPC or HTTP/protobuf) through a bounded batch queue.
//!
//! Spans are named `{METHOD} {route}` (`{METHOD}` alone when no route matched) and
//! carry the HTTP semantic-convention attributes. Export runs on the SDK's batch
//! thread; a full queue drops spans, so a slow or dead collector never delays a
//! request. The exporter pipeline is built lazily inside the I/O runtime (tonic and
//! the HTTP client need one).

pub mod bridge;
mod http_client;

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime};

use cello_config::TelemetryConfig;
use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanProcessor,
};
use opentelemetry_sdk::Resource;

/// Standard variables read when the config leaves a field unset.
pub const ENV_VARS: &[&str] = &[
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TIMEOUT",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_TRACES_EXPORTER",
    "OTEL_SDK_DISABLED",
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
];

/// Shares one batch processor between the provider and spans created elsewhere
/// (the Python `opentelemetry` SDK bridge).
#[derive(Debug, Clone)]
struct SharedProcessor(Arc<BatchSpanProcessor>);

impl SpanProcessor for SharedProcessor {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.0.on_start(span, cx);
    }
    fn on_end(&self, span: SpanData) {
        self.0.on_end(span);
    }
    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
}

struct Pipeline {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    processor: Option<Arc<BatchSpanProcessor>>,
}

/// Tracing for one server.
pub struct Telemetry {
    config: TelemetryConfig,
    pipeline: OnceLock<Pipeline>,
    propagator: TraceContextPropagator,
}

static CURRENT: Mutex<Option<Weak<Telemetry>>> = Mutex::new(None);

/// The most recently started telemetry of this process (for the Python span bridge).
pub fn current() -> Option<Arc<Telemetry>> {
    CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()?
        .upgrade()
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn sampler(config: &TelemetryConfig) -> Sampler {
    if let Some(rate) = config.sampling_rate {
        return Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(rate)));
    }
    let arg = env("OTEL_TRACES_SAMPLER_ARG")
        .and_then(|a| a.parse::<f64>().ok())
        .filter(|r| (0.0..=1.0).contains(r))
        .unwrap_or(1.0);
    match env("OTEL_TRACES_SAMPLER").as_deref() {
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::TraceIdRatioBased(arg),
        Some("parentbased_always_off") => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(arg))),
        _ => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
    }
}

/// `grpc` or `http/protobuf`, from the config or the standard variables.
fn protocol(config: &TelemetryConfig) -> String {
    config
        .protocol
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "grpc".into())
}

/// The HTTP endpoint for traces: a configured base URL gets `/v1/traces` appended.
fn http_endpoint(base: &str) -> String {
    let trimmed = base.trim_end_matches('/');
    let path_empty = trimmed
        .split_once("://")
        .map_or(trimmed, |(_, rest)| rest)
        .find('/')
        .is_none();
    if path_empty {
        format!("{trimmed}/v1/traces")
    } else {
        trimmed.to_owned()
    }
}

fn build_exporter(config: &TelemetryConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let timeout = Duration::from_secs_f64(config.export_timeout_secs);
    let proto = protocol(config);
    if proto.starts_with("http") {
        if proto == "http/json" {
            tracing::warn!("OTLP http/json is not supported; exporting http/protobuf");
        }
        let mut b = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_http_client(http_client::TokioHttpClient::new(timeout)?)
            .with_timeout(timeout);
        if let Some(ep) = &config.otlp_endpoint {
            b = b.with_endpoint(http_endpoint(ep));
        }
        b.build().map_err(|e| e.to_string())
    } else {
        let mut b = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(timeout);
        if let Some(ep) = &config.otlp_endpoint {
            b = b.with_endpoint(ep.clone());
        }
        b.build().map_err(|e| e.to_string())
    }
}

impl Telemetry {
    /// Tracing as `config` says (its pipeline starts on first use or [`Self::start`]).
    pub fn new(config: TelemetryConfig) -> Arc<Self> {
        let t = Arc::new(Self {
            config,
            pipeline: OnceLock::new(),
            propagator: TraceContextPropagator::new(),
        });
        *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::downgrade(&t));
        t
    }

    /// Build the exporter pipeline now; call inside the I/O runtime.
    pub fn start(&self) {
        let _ = self.pipeline();
    }

    fn pipeline(&self) -> &Pipeline {
        self.pipeline.get_or_init(|| {
            let cfg = &self.config;
            let mut resource = Resource::builder();
            if let Some(name) = cfg.service_name.clone().filter(|n| !n.is_empty()) {
                resource = resource.with_service_name(name);
            } else if env("OTEL_SERVICE_NAME").is_none() {
                resource = resource.with_service_name("cello");
            }
            if let Some(v) = &cfg.service_version {
                resource = resource.with_attribute(KeyValue::new("service.version", v.clone()));
            }
            let resource = resource.build();
            let mut builder = SdkTracerProvider::builder()
                .with_sampler(sampler(cfg))
                .with_resource(resource.clone());
            let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
                || env("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none");
            let mut processor = None;
            if cfg.export_traces && !disabled {
                match build_exporter(cfg) {
                    Ok(mut exporter) => {
                        // The shared processor cannot forward the provider's resource.
                        opentelemetry_sdk::trace::SpanExporter::set_resource(&mut exporter, &resource);
                        let batch = BatchConfigBuilder::default()
                            .with_max_queue_size(cfg.max_queue_size)
                            .build();
                        let p = Arc::new(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build());
                        builder = builder.with_span_processor(SharedProcessor(p.clone()));
                        processor = Some(p);
                    }
                    Err(e) => tracing::error!(error = %e, "cannot build the OTLP exporter; spans are not exported"),
                }
            }
            let provider = builder.build();
            let tracer = provider.tracer("cello");
            Pipeline {
                provider,
                tracer,
                processor,
            }
        })
    }

    /// Whether `path` gets no span.
    pub fn excluded(&self, path: &str) -> bool {
        self.config.excluded_paths.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => path == p,
        })
    }

    /// Whether responses carry `traceparent`.
    pub fn propagate_response(&self) -> bool {
        self.config.propagate_response
    }

    /// Start the server span of a request. `route` is the matched template. The
    /// request's `traceparent`/`tracestate` headers are replaced by the server span's,
    /// so code running the handler continues the trace under it.
    pub fn start_span(
        &self,
        parts: &mut http::request::Parts,
        route: Option<&str>,
        start: SystemTime,
        peer: Option<std::net::SocketAddr>,
        tls: bool,
    ) -> ServerSpan {
        let parent = self.propagator.extract(&HeaderExtractor(&parts.headers));
        let method = parts.method.as_str();
        let known = crate::metrics::known_method(&parts.method);
        let name: Cow<'static, str> = match route {
            Some(r) => format!("{} {r}", if known { method } else { "HTTP" }).into(),
            None => (if known { method.to_owned() } else { "HTTP".to_owned() }).into(),
        };
        let mut attrs = Vec::with_capacity(12);
        attrs.push(KeyValue::new(
            "http.request.method",
            if known { method.to_owned() } else { "_OTHER".into() },
        ));
        if !known {
            attrs.push(KeyValue::new("http.request.method_original", method.to_owned()));
        }
        attrs.push(KeyValue::new("url.path", parts.uri.path().to_owned()));
        if let Some(q) = parts.uri.query() {
            attrs.push(KeyValue::new("url.query", q.to_owned()));
        }
        attrs.push(KeyValue::new("url.scheme", if tls { "https" } else { "http" }));
        if let Some(r) = route {
            attrs.push(KeyValue::new("http.route", r.to_owned()));
        }
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()));
        if let Some(host) = host {
            let (addr, port) = match host.rsplit_once(':') {
                Some((a, p)) if !a.ends_with(']') || host.starts_with('[') => (a.to_owned(), p.parse::<i64>().ok()),
                _ => (host.clone(), None),
            };
            attrs.push(KeyValue::new("server.address", addr));
            if let Some(p) = port {
                attrs.push(KeyValue::new("server.port", p));
            }
        }
        let version = match parts.version {
            http::Version::HTTP_09 => "0.9",
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            http::Version::HTTP_3 => "3",
            _ => "1.1",
        };
        attrs.push(KeyValue::new("network.protocol.version", version));
        if let Some(peer) = peer {
            attrs.push(KeyValue::new("client.address", peer.ip().to_string()));
            attrs.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
            attrs.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
        }
        if let Some(ua) = parts
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
        {
            attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
        }
        if let Some(id) = parts.extensions.get::<crate::middleware::request_id::RequestId>() {
            // The request-id layer runs outside this one (see stack.rs).
            attrs.push(KeyValue::new("http.request.id", id.0.to_string()));
        }
        let tracer = &self.pipeline().tracer;
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(start)
            .with_attributes(attrs)
            .start_with_context(tracer, &parent);
        let cx = span.span_context().clone();
        // The handler's parent is the server span.
        let own = Context::new().with_remote_span_context(cx.clone());
        parts.headers.remove("traceparent");
        parts.headers.remove("tracestate");
        self.propagator
            .inject_context(&own, &mut HeaderInjector(&mut parts.headers));
        ServerSpan { span, cx }
    }

    /// Export a span made elsewhere in this process (the Python SDK bridge). Never blocks.
    pub fn export(&self, span: SpanData) {
        if let Some(p) = &self.pipeline().processor {
            p.on_end(span);
        }
    }

    /// Export a span from another SDK in this process (see [`bridge`]).
    pub fn export_foreign(&self, span: bridge::ForeignSpan) {
        if span.trace_flags & 1 == 1 {
            self.export(span.into_span_data());
        }
    }

    /// Export what is queued, waiting at most `timeout`.
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(p) = self.pipeline.get() {
            let _ = p.provider.shutdown_with_timeout(timeout);
        }
    }
}

/// A request's server span.
pub struct ServerSpan {
    span: opentelemetry_sdk::trace::Span,
    cx: SpanContext,
}

impl ServerSpan {
    /// Routing found `template`: name the span after it and set `http.route`.
    pub fn set_route(&mut self, method: &http::Method, template: &str) {
        let m = if crate::metrics::known_method(method) {
            method.as_str()
        } else {
            "HTTP"
        };
        self.span.update_name(format!("{m} {template}"));
        self.span
            .set_attribute(KeyValue::new("http.route", template.to_owned()));
    }

    /// (trace id, span id) in lowercase hex, for logs.
    pub fn ids(&self) -> (String, String) {
        (self.cx.trace_id().to_string(), self.cx.span_id().to_string())
    }

    /// End the span with the response status; with `inject`, add `traceparent` to `headers`.
    pub fn finish(mut self, status: u16, headers: &mut HeaderMap, inject: bool, propagator: Option<&Telemetry>) {
        self.span
            .set_attribute(KeyValue::new("http.response.status_code", i64::from(status)));
        if status >= 500 {
            self.span.set_attribute(KeyValue::new("error.type", status.to_string()));
            self.span.set_status(Status::error(""));
        }
        self.span.end();
        if inject {
            if let Some(t) = propagator {
                let cx = Context::new().with_remote_span_context(self.cx.clone());
                t.propagator.inject_context(&cx, &mut HeaderInjector(headers));
            }
        }
    }
}

/// Reads W3C headers from a header map.
pub struct HeaderExtractor<'a>(pub &'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes W3C headers into a header map.
pub struct HeaderInjector<'a>(pub &'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoint_appends_the_signal_path_to_a_base_url() {
        assert_eq!(http_endpoint("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(http_endpoint("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(http_endpoint("http://c:4318/custom"), "http://c:4318/custom");
    }

    #[test]
    fn exclusions() {
        let t = Telemetry::new(TelemetryConfig {
            excluded_paths: vec!["/health*".into(), "/metrics".into()],
            ..TelemetryConfig::default()
        });
        assert!(t.excluded("/health/live"));
        assert!(t.excluded("/metrics"));
        assert!(!t.excluded("/metrics/x"));
        assert!(!t.excluded("/users"));
    }

    #[test]
    fn server_span_continues_the_incoming_trace() {
        let t = Telemetry::new(TelemetryConfig {
            enabled: true,
            export_traces: false,
            ..TelemetryConfig::default()
        });
        let (mut parts, ()) = http::Request::get("/users/7?x=1")
            .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
            .header("host", "example.com:8080")
            .body(())
            .unwrap()
            .into_parts();
        let span = t.start_span(&mut parts, Some("/users/{id}"), SystemTime::now(), None, false);
        let (trace, id) = span.ids();
        assert_eq!(trace, "0af7651916cd43dd8448eb211c80319c");
        let tp = parts.headers["traceparent"].to_str().unwrap().to_owned();
        assert_eq!(tp, format!("00-{trace}-{id}-01"));
        let mut headers = HeaderMap::new();
        span.finish(200, &mut headers, true, Some(&t));
        assert_eq!(headers["traceparent"].to_str().unwrap(), tp);
    }
}
