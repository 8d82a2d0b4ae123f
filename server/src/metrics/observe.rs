//! The per-request observer: metrics, the server span and trace ids for the access log.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{HeaderValue, Method, Response, Uri};
use http_body::Body as _;

use super::{QueueClock, RouteKey, Sample};
use crate::body::ResponseBody;
use crate::router::Route;
use crate::service::{AppState, ConnInfo};
use crate::telemetry::ServerSpan;

/// Follows one request from its head to its response head. Costs a branch when
/// metrics and tracing are both off.
pub struct Observation {
    on: bool,
    start: Instant,
    wall: Option<SystemTime>,
    method: Method,
    uri: Uri,
    trace_headers: [Option<HeaderValue>; 2],
    route: Option<Arc<Route<usize>>>,
    request_size: u64,
    clock: Option<Arc<QueueClock>>,
    span: Option<ServerSpan>,
}

/// Trace ids of a finished request, for the access log.
pub type TraceIds = Option<(String, String)>;

impl Observation {
    /// A request head arrived.
    pub fn begin<B>(state: &AppState, req: &http::Request<B>) -> Self {
        let traced = state.telemetry.as_ref().is_some_and(|t| !t.excluded(req.uri().path()));
        let on = traced || state.metrics.is_some();
        if let (true, Some(m)) = (on, &state.metrics) {
            m.request_started(req.method());
        }
        Self {
            on,
            start: Instant::now(),
            wall: traced.then(SystemTime::now),
            method: if on { req.method().clone() } else { Method::GET },
            uri: if traced { req.uri().clone() } else { Uri::default() },
            trace_headers: if traced {
                [
                    req.headers().get("traceparent").cloned(),
                    req.headers().get("tracestate").cloned(),
                ]
            } else {
                [None, None]
            },
            route: None,
            request_size: 0,
            clock: None,
            span: None,
        }
    }

    /// Routing found `route`.
    pub fn matched(&mut self, route: &Arc<Route<usize>>) {
        if self.on {
            self.route = Some(route.clone());
        }
    }

    /// The body was read and the request goes to the endpoint: start the server span
    /// (its context replaces the request's `traceparent`) and the queue clock.
    pub fn routed(&mut self, state: &AppState, parts: &mut http::request::Parts, body_len: usize, conn: &ConnInfo) {
        if !self.on {
            return;
        }
        self.request_size = body_len as u64;
        if state.metrics.is_some() {
            let clock = QueueClock::start();
            parts.extensions.insert(clock.clone());
            self.clock = Some(clock);
        }
        if let (Some(t), Some(wall)) = (&state.telemetry, self.wall) {
            let route = self.route.as_ref().map(|r| &*r.template);
            self.span = Some(t.start_span(parts, route, wall, conn.peer, conn.tls));
        }
    }

    /// The response head is ready: record metrics, end the span, add `traceparent` to
    /// the response when configured. Returns the trace ids for the access log.
    pub fn finish(mut self, state: &AppState, conn: &ConnInfo, resp: &mut Response<ResponseBody>) -> TraceIds {
        if !self.on {
            return None;
        }
        let status = resp.status().as_u16();
        if let Some(m) = &state.metrics {
            let response_size = resp.body().size_hint().exact().or_else(|| {
                resp.headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
            });
            let route = match &self.route {
                Some(r) => RouteKey::Matched {
                    index: r.target,
                    template: &r.template,
                },
                None => RouteKey::Unmatched,
            };
            m.request_finished(&Sample {
                route,
                method: &self.method,
                status,
                duration: self.start.elapsed(),
                request_size: self.request_size,
                response_size,
            });
            if let Some((queue, handler)) = self.clock.as_ref().and_then(|c| c.split()) {
                m.observe_queue(queue);
                m.observe_handler(handler);
            }
        }
        let t = state.telemetry.as_ref()?;
        let span = match self.span.take() {
            Some(s) => s,
            // No route (404, 405, OPTIONS, bad path): a span named by the method alone.
            None => {
                let wall = self.wall?;
                let mut req = http::Request::new(());
                *req.method_mut() = self.method.clone();
                *req.uri_mut() = std::mem::take(&mut self.uri);
                let [tp, ts] = std::mem::take(&mut self.trace_headers);
                if let Some(v) = tp {
                    req.headers_mut().insert("traceparent", v);
                }
                if let Some(v) = ts {
                    req.headers_mut().insert("tracestate", v);
                }
                let (mut parts, ()) = req.into_parts();
                t.start_span(&mut parts, None, wall, conn.peer, conn.tls)
            }
        };
        let ids = span.ids();
        span.finish(status, resp.headers_mut(), t.propagate_response(), Some(t));
        Some(ids)
    }
}
