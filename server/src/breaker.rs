//! The circuit breaker layer (`circuit_breaker`): one breaker per route template.
//!
//! Closed → open after `failureThreshold` consecutive failures (every 5xx, or the
//! `failureCodes`; 500 (handler exceptions) and 504 (timeouts) always count). Open: the
//! route is answered 503 problem+json with `Retry-After` without calling its target or
//! Python. The router asks [`gate`] right after its lookup (one route lookup per request;
//! the breaker stays the innermost layer before the target). After `resetTimeout` it is
//! half-open: up to `halfOpenTarget` trial requests go through at once (others get 503); `halfOpenTarget` successes close it, one failure opens
//! it again. Requests that match no route pass through untouched. State and transitions
//! are exported at `/metrics` (this worker's breakers).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use cello_config::CircuitBreakerConfig;
use http::{header, HeaderValue, StatusCode};

use crate::problem::problem;
use crate::router::Route;
use crate::service::AppState;
use crate::stack::{Post, Resp};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { successes: u32, trials: u32 },
}

impl State {
    fn name(self) -> &'static str {
        match self {
            Self::Closed { .. } => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

struct Breaker {
    state: State,
    /// Transitions into each state: closed, open, half_open.
    transitions: [u64; 3],
    rejected: u64,
}

fn slot(name: &str) -> usize {
    match name {
        "closed" => 0,
        "open" => 1,
        _ => 2,
    }
}

/// Every route's breaker.
pub struct Breakers {
    config: CircuitBreakerConfig,
    reset: Duration,
    routes: Mutex<HashMap<Arc<str>, Breaker>>,
}

/// What a request may do.
enum Admit {
    Pass { trial: bool },
    Refuse { retry_after: u64 },
}

impl Breakers {
    /// Build from a validated config.
    pub fn new(config: CircuitBreakerConfig) -> Self {
        Self {
            reset: Duration::from_secs_f64(config.reset_timeout),
            config,
            routes: Mutex::new(HashMap::new()),
        }
    }

    fn with<R>(&self, route: &Arc<str>, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut map = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        // A known route: no clone of its name (`entry` takes the key by value).
        if let Some(b) = map.get_mut(route) {
            return f(b);
        }
        let b = map.entry(route.clone()).or_insert(Breaker {
            state: State::Closed { failures: 0 },
            transitions: [0; 3],
            rejected: 0,
        });
        f(b)
    }

    fn set(b: &mut Breaker, to: State) {
        if b.state.name() != to.name() {
            b.transitions[slot(to.name())] += 1;
            tracing::info!(from = b.state.name(), to = to.name(), "circuit breaker transition");
        }
        b.state = to;
    }

    fn admit(&self, route: &Arc<str>) -> Admit {
        let now = Instant::now();
        let target = self.config.half_open_target;
        self.with(route, |b| match b.state {
            State::Closed { .. } => Admit::Pass { trial: false },
            State::Open { until } if now < until => {
                b.rejected += 1;
                Admit::Refuse {
                    retry_after: (until - now).as_secs_f64().ceil().max(1.0) as u64,
                }
            }
            State::Open { .. } => {
                Self::set(
                    b,
                    State::HalfOpen {
                        successes: 0,
                        trials: 1,
                    },
                );
                Admit::Pass { trial: true }
            }
            State::HalfOpen { successes, trials } if successes + trials < target => {
                b.state = State::HalfOpen {
                    successes,
                    trials: trials + 1,
                };
                Admit::Pass { trial: true }
            }
            State::HalfOpen { .. } => {
                b.rejected += 1;
                Admit::Refuse { retry_after: 1 }
            }
        })
    }

    fn is_failure(&self, status: StatusCode) -> bool {
        let code = status.as_u16();
        if code == 500 || code == 504 {
            return true;
        }
        if self.config.failure_codes.is_empty() {
            status.is_server_error()
        } else {
            self.config.failure_codes.contains(&code)
        }
    }

    /// A request let through finished with `status` (`None`: it was dropped unfinished).
    fn record(&self, route: &Arc<str>, trial: bool, status: Option<StatusCode>) {
        let failed = status.map(|s| self.is_failure(s));
        let (threshold, target, reset) = (self.config.failure_threshold, self.config.half_open_target, self.reset);
        self.with(route, |b| match (b.state, failed) {
            (State::Closed { failures }, Some(true)) => {
                if failures + 1 >= threshold {
                    Self::set(
                        b,
                        State::Open {
                            until: Instant::now() + reset,
                        },
                    );
                } else {
                    b.state = State::Closed { failures: failures + 1 };
                }
            }
            (State::Closed { .. }, Some(false)) => b.state = State::Closed { failures: 0 },
            (State::HalfOpen { .. }, Some(true)) if trial => {
                Self::set(
                    b,
                    State::Open {
                        until: Instant::now() + reset,
                    },
                );
            }
            (State::HalfOpen { successes, trials }, Some(false)) if trial => {
                if successes + 1 >= target {
                    Self::set(b, State::Closed { failures: 0 });
                } else {
                    b.state = State::HalfOpen {
                        successes: successes + 1,
                        trials: trials.saturating_sub(1),
                    };
                }
            }
            (State::HalfOpen { successes, trials }, None) if trial => {
                b.state = State::HalfOpen {
                    successes,
                    trials: trials.saturating_sub(1),
                };
            }
            _ => {}
        });
    }

    /// Prometheus text for every breaker seen so far.
    pub fn exposition(&self, namespace: &str) -> String {
        let map = self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut routes: Vec<_> = map.iter().collect();
        routes.sort_by(|a, b| a.0.cmp(b.0));
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP {namespace}_circuit_breaker_state Circuit breaker state per route (1 for the current state).\n# TYPE {namespace}_circuit_breaker_state gauge"
        );
        for (route, b) in &routes {
            for s in ["closed", "open", "half_open"] {
                let v = u8::from(b.state.name() == s);
                let _ = writeln!(
                    out,
                    "{namespace}_circuit_breaker_state{{route=\"{}\",state=\"{s}\"}} {v}",
                    esc(route)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {namespace}_circuit_breaker_transitions_total Transitions into each state per route.\n# TYPE {namespace}_circuit_breaker_transitions_total counter"
        );
        for (route, b) in &routes {
            for s in ["closed", "open", "half_open"] {
                let _ = writeln!(
                    out,
                    "{namespace}_circuit_breaker_transitions_total{{route=\"{}\",to=\"{s}\"}} {}",
                    esc(route),
                    b.transitions[slot(s)]
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP {namespace}_circuit_breaker_rejected_total Requests answered 503 by an open breaker.\n# TYPE {namespace}_circuit_breaker_rejected_total counter"
        );
        for (route, b) in &routes {
            let _ = writeln!(
                out,
                "{namespace}_circuit_breaker_rejected_total{{route=\"{}\"}} {}",
                esc(route),
                b.rejected
            );
        }
        out
    }
}

/// Records the outcome; dropping it unfinished gives a trial slot back.
pub struct BreakerPost {
    breakers: Arc<Breakers>,
    route: Arc<str>,
    trial: bool,
    done: bool,
}

impl Post for BreakerPost {
    fn post(mut self, resp: Resp) -> Resp {
        self.done = true;
        self.breakers.record(&self.route, self.trial, Some(resp.status()));
        resp
    }
}

impl Drop for BreakerPost {
    fn drop(&mut self) {
        if !self.done {
            self.breakers.record(&self.route, self.trial, None);
        }
    }
}

/// The breaker of the route the router just matched (one lookup per request, the
/// router's): `Err` is the 503 of an open circuit, `Ok(Some)` records the outcome of a
/// request let through, `Ok(None)`: no breakers configured.
#[allow(clippy::result_large_err)] // moved once, straight into the router's future
pub(crate) fn gate(state: &AppState, route: &Route<usize>) -> Result<Option<BreakerPost>, Resp> {
    let Some(breakers) = state.breakers.as_ref() else {
        return Ok(None);
    };
    let route = &route.template;
    match breakers.admit(route) {
        Admit::Refuse { retry_after } => {
            let mut r = problem(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the circuit for {route} is open; retry in {retry_after} s"),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            Err(r)
        }
        Admit::Pass { trial } => Ok(Some(BreakerPost {
            breakers: breakers.clone(),
            route: route.clone(),
            trial,
            done: false,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: 2,
            reset_timeout: 0.05,
            half_open_target: 2,
            failure_codes: Vec::new(),
        }
    }

    #[test]
    fn closed_open_half_open_closed() {
        let b = Breakers::new(cfg());
        let r: Arc<str> = "/x".into();
        assert!(matches!(b.admit(&r), Admit::Pass { trial: false }));
        b.record(&r, false, Some(StatusCode::INTERNAL_SERVER_ERROR));
        b.record(&r, false, Some(StatusCode::OK)); // a success resets the count
        b.record(&r, false, Some(StatusCode::BAD_GATEWAY));
        b.record(&r, false, Some(StatusCode::BAD_GATEWAY));
        assert!(matches!(b.admit(&r), Admit::Refuse { .. }));
        std::thread::sleep(Duration::from_millis(60));
        assert!(matches!(b.admit(&r), Admit::Pass { trial: true }));
        assert!(matches!(b.admit(&r), Admit::Pass { trial: true }));
        assert!(matches!(b.admit(&r), Admit::Refuse { retry_after: 1 }));
        b.record(&r, true, Some(StatusCode::OK));
        b.record(&r, true, Some(StatusCode::OK));
        assert!(matches!(b.admit(&r), Admit::Pass { trial: false }));
        let text = b.exposition("cello");
        assert!(
            text.contains("cello_circuit_breaker_state{route=\"/x\",state=\"closed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cello_circuit_breaker_transitions_total{route=\"/x\",to=\"open\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn failure_codes_replace_the_5xx_set_but_500_and_504_count() {
        let mut c = cfg();
        c.failure_codes = vec![429];
        let b = Breakers::new(c);
        assert!(b.is_failure(StatusCode::TOO_MANY_REQUESTS));
        assert!(!b.is_failure(StatusCode::BAD_GATEWAY));
        assert!(b.is_failure(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(b.is_failure(StatusCode::GATEWAY_TIMEOUT));
    }
}
