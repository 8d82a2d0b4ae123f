//! The per-request observer behind the stack's `observe` layer: metrics, the server
//! span and trace ids for the access log.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Method, Response};
use http_body::Body as _;

use super::{QueueClock, RouteKey, Sample};
use crate::body::ResponseBody;
use crate::ext::{ConnInfo, MatchedRoute, TraceIds};
use crate::service::AppState;
use crate::telemetry::ServerSpan;

/// Follows one request from its head to its response head.
pub struct Observation {
    start: Instant,
    method: Method,
    clock: Option<Arc<QueueClock>>,
    span: Option<ServerSpan>,
}

impl Observation {
    /// A request head arrived: count it, start the queue clock (metrics) and the server
    /// span (tracing; its context replaces the request's `traceparent`, so the handler's
    /// spans are its children).
    pub fn begin<B>(state: &AppState, req: http::Request<B>) -> (Self, http::Request<B>) {
        let (mut parts, body) = req.into_parts();
        let mut clock = None;
        if let Some(m) = &state.metrics {
            m.request_started(&parts.method);
            let c = QueueClock::start();
            parts.extensions.insert(c.clone());
            clock = Some(c);
        }
        let span = state
            .telemetry
            .as_ref()
            .filter(|t| !t.excluded(parts.uri.path()))
            .map(|t| {
                let (peer, tls) = parts
                    .extensions
                    .get::<ConnInfo>()
                    .map_or((None, false), |c| (c.peer, c.tls));
                t.start_span(&mut parts, None, SystemTime::now(), peer, tls)
            });
        let obs = Self {
            start: Instant::now(),
            method: parts.method.clone(),
            clock,
            span,
        };
        (obs, http::Request::from_parts(parts, body))
    }

    /// The response head is ready: record metrics, end the span, add `traceparent` to
    /// the response when configured, leave the trace ids on the response for the access
    /// layer.
    pub fn finish(self, state: &AppState, resp: &mut Response<ResponseBody>) {
        let status = resp.status().as_u16();
        let route = resp.extensions().get::<MatchedRoute>().map(|m| m.0.clone());
        if let Some(m) = &state.metrics {
            let response_size = resp.body().size_hint().exact().or_else(|| {
                resp.headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
            });
            let key = match &route {
                Some(r) => RouteKey::Matched {
                    index: r.target,
                    template: &r.template,
                },
                None => RouteKey::Unmatched,
            };
            m.request_finished(&Sample {
                route: key,
                method: &self.method,
                status,
                duration: self.start.elapsed(),
                request_size: self.clock.as_ref().map_or(0, |c| c.request_size()),
                response_size,
            });
            if let Some((queue, handler)) = self.clock.as_ref().and_then(|c| c.split()) {
                m.observe_queue(queue);
                m.observe_handler(handler);
            }
        }
        if let (Some(t), Some(mut span)) = (&state.telemetry, self.span) {
            if let Some(r) = &route {
                span.set_route(&self.method, &r.template);
            }
            let (trace, id) = span.ids();
            span.finish(status, resp.headers_mut(), t.propagate_response(), Some(t));
            if state.access.is_some() {
                resp.extensions_mut().insert(TraceIds(trace, id));
            }
        }
    }
}
