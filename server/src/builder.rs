//! [`Server::builder`]: the one place a server is assembled and run. The embedded
//! Python server, the TestClient's in-process path and `cello-dataplane` all go
//! through it.
//!
//! Lifecycle of [`App::serve`]: startup (startup probe turns 200, tracing and the
//! metrics snapshot task start) → ready → drain ([`App::drain`] or SIGTERM/SIGINT when
//! `signals` is on: `/health/ready` turns 503 at once, the listener closes after
//! `drainDelaySecs`) → stop (in-flight requests finish within the drain timeout, the
//! last metrics snapshot is written and spans are flushed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cello_config::ServerConfig;
use http::{Method, Request, Response};
pub use tokio_util::sync::CancellationToken as ShutdownHandle;

use crate::body::{RequestBody, ResponseBody};
use crate::error::Result;
use crate::health::HealthChecker;
use crate::router::RouterBuilder;
use crate::serve::Listener;
use crate::service::{AccessSink, AppState, ConnInfo};
use crate::stack::HttpService;
use crate::target::{RouteEntry, RouteOptions, Target};

/// Entry point: `Server::builder(config)`.
pub struct Server;

impl Server {
    /// Start assembling a server from `config` (validated by [`ServerBuilder::build`]).
    pub fn builder(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            router: RouterBuilder::new(),
            entries: Vec::new(),
            access: None,
            checker: None,
        }
    }
}

/// Collects routes and hooks; [`ServerBuilder::build`] freezes them into an [`App`].
pub struct ServerBuilder {
    config: ServerConfig,
    router: RouterBuilder<usize>,
    entries: Vec<(Arc<Target>, RouteOptions)>,
    access: Option<AccessSink>,
    checker: Option<Arc<dyn HealthChecker>>,
}

impl ServerBuilder {
    /// Route `methods` on `path` to `target`; returns the route's index.
    pub fn route(&mut self, methods: &[Method], path: &str, target: Target) -> Result<usize> {
        self.route_with(methods, path, target, RouteOptions::default())
    }

    /// Like [`ServerBuilder::route`], with the route's own layers and body mode.
    pub fn route_with(
        &mut self,
        methods: &[Method],
        path: &str,
        target: Target,
        options: RouteOptions,
    ) -> Result<usize> {
        let index = self.entries.len();
        // A WebSocket route shares its path with the HTTP routes there: upgrades go to it.
        if matches!(target, Target::WebSocket(_)) && methods == [Method::GET] {
            self.router.add_websocket(path, index)?;
        } else {
            self.router.add(methods, path, index)?;
        }
        self.entries.push((Arc::new(target), options));
        Ok(index)
    }

    /// Route `methods` on `path` to the target of an existing route `index`.
    pub fn alias(&mut self, methods: &[Method], path: &str, index: usize) -> Result<()> {
        self.router.add(methods, path, index)
    }

    /// Send access records to `sink` (when `access_log` is on; ignored otherwise).
    #[must_use]
    pub fn access_log(mut self, sink: AccessSink) -> Self {
        self.access = Some(sink);
        self
    }

    /// Who runs `/health/ready`'s checks (can also be set later on the `Health`).
    #[must_use]
    pub fn health_checker(mut self, checker: Arc<dyn HealthChecker>) -> Self {
        self.checker = Some(checker);
        self
    }

    /// Validate the config, compile the router and build the stack.
    pub fn build(mut self) -> Result<App> {
        self.config.validate()?;
        // Static mounts are routes like any other (GET/HEAD, 404/405 by the router).
        for mount in self.config.static_files.clone() {
            let mount = Arc::new(crate::statics::StaticMount::new(mount)?);
            let mut index = None;
            for template in mount.templates() {
                match index {
                    None => index = Some(self.route(&[Method::GET], &template, Target::Static(mount.clone()))?),
                    Some(i) => self.alias(&[Method::GET], &template, i)?,
                }
            }
        }
        let router = self.router.build()?;
        let access = self.access.filter(|_| self.config.access_log);
        let config = Arc::new(self.config.clone());
        let mut state = AppState::new(router, self.config, access);
        state.gates = crate::auth::Gates::build(&state.config)?;
        state.rate_limit = match &state.config.rate_limit {
            Some(c) => Some(Arc::new(crate::ratelimit::RateLimiter::new(c)?)),
            None => None,
        };
        state.sessions = match &state.config.session {
            Some(c) => Some(Arc::new(crate::session::Sessions::new(c)?)),
            None => None,
        };
        state.csrf = match &state.config.csrf {
            Some(c) => Some(Arc::new(crate::csrf::Csrf::new(&state.config, c)?)),
            None => None,
        };
        if let (Some(h), Some(c)) = (&state.health, self.checker) {
            h.set_checker(c);
        }
        state.targets = self
            .entries
            .into_iter()
            .map(|(target, options)| RouteEntry {
                stack: crate::target::route_stack(&config, &target, &options),
                target,
                options,
            })
            .collect();
        // Certificate files are read now, so a bad one fails the start, not the first client.
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(crate::tls::TlsAcceptor::load(t)?)),
            None => None,
        };
        let state = Arc::new(state);
        let service = crate::stack::build(&state);
        Ok(App {
            inner: Arc::new(Inner {
                state,
                service,
                tls,
                drain: ShutdownHandle::new(),
                stop: ShutdownHandle::new(),
            }),
        })
    }
}

struct Inner {
    state: Arc<AppState>,
    service: HttpService,
    /// TLS termination (`config.tls`): the listener is wrapped by [`App::serve`].
    tls: Option<Arc<crate::tls::TlsAcceptor>>,
    /// Cancelled when a drain begins.
    drain: ShutdownHandle,
    /// Cancelled when the listener must close (after the drain delay).
    stop: ShutdownHandle,
}

/// A built server: the stack, its state and its lifecycle. Cheap to clone.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

/// How [`App::serve`] runs.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// How long in-flight requests may take to finish once the listener closed.
    pub drain_timeout: Duration,
    /// Start the drain on SIGTERM/SIGINT from the I/O side (so probes flip at once even
    /// when the thread that runs handlers is busy).
    pub signals: bool,
}

impl App {
    /// Shared state (config, router, metrics, health, trusted proxies).
    pub fn state(&self) -> &Arc<AppState> {
        &self.inner.state
    }

    /// The request stack.
    pub fn service(&self) -> &HttpService {
        &self.inner.service
    }

    /// The stack's layers, outermost first.
    pub fn layers(&self) -> Vec<&'static str> {
        crate::stack::describe(&self.inner.state)
    }

    /// Bind `config.host:config.port` (SO_REUSEPORT, as workers share the port).
    pub fn bind(&self) -> Result<Listener> {
        Listener::bind_tcp(crate::serve::config_addr(&self.inner.state.config)?)
    }

    /// Like [`App::bind`], but fail with `AddrInUse` when any other socket (even an
    /// SO_REUSEPORT one of this user) holds the port.
    pub fn bind_exclusive(&self) -> Result<Listener> {
        let addr = crate::serve::config_addr(&self.inner.state.config)?;
        crate::serve::probe_port_free(addr)?;
        Listener::bind_tcp(addr)
    }

    /// One request through the whole stack without a socket (TestClient, tests).
    pub async fn oneshot(&self, mut req: Request<RequestBody>, peer: Option<SocketAddr>) -> Response<ResponseBody> {
        req.extensions_mut().insert(ConnInfo::new(peer, false));
        match self.inner.service.run(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }

    /// Begin the drain: `/health/ready` answers 503 from now on; [`App::serve`] stops
    /// accepting after `drainDelaySecs`. Idempotent.
    pub fn drain(&self) {
        crate::health::begin_drain(&self.inner.state);
        self.inner.drain.cancel();
    }

    /// Stop accepting now (no drain delay).
    pub fn stop(&self) {
        crate::health::begin_drain(&self.inner.state);
        self.inner.stop.cancel();
    }

    /// Whether a drain has begun.
    pub fn draining(&self) -> bool {
        self.inner.drain.is_cancelled() || self.inner.stop.is_cancelled()
    }

    /// Serve on `listener` through the whole lifecycle; returns when stopped. Call inside
    /// the I/O runtime.
    pub async fn serve(&self, listener: Listener, opts: ServeOptions) -> Result<()> {
        let state = self.inner.state.clone();
        crate::health::on_start(&state);
        if opts.signals {
            let app = self.clone();
            // Registered here, synchronously, so a signal right after start is seen.
            let signals = signals();
            tokio::spawn(async move {
                if let Some(mut s) = signals {
                    tokio::select! {
                        _ = s.0.recv() => {}
                        _ = s.1.recv() => {}
                    }
                    tracing::info!("signal received; draining");
                    app.drain();
                }
            });
        }
        {
            let (drain, stop) = (self.inner.drain.clone(), self.inner.stop.clone());
            let delay = state.health.as_ref().map_or(Duration::ZERO, |h| h.drain_delay());
            tokio::spawn(async move {
                tokio::select! {
                    () = drain.cancelled() => {}
                    () = stop.cancelled() => return,
                }
                tokio::time::sleep(delay).await;
                stop.cancel();
            });
        }
        // HTTP/3: UDP on the TCP listener's port number, same certificate.
        let quic = match &state.config.http3 {
            Some(_) => Some(Arc::new(crate::http3::QuicListener::bind(
                listener.local_addr()?,
                &state.config,
            )?)),
            None => None,
        };
        let listener = match (&self.inner.tls, listener) {
            (Some(tls), Listener::Tcp(l)) => {
                reload_on_sighup(tls.clone(), quic.clone(), self.inner.stop.clone());
                Listener::Tls(l, tls.clone())
            }
            (_, l) => l,
        };
        let alt_svc = match &quic {
            Some(_) => crate::http3::alt_svc(listener.local_addr()?.port()),
            None => None,
        };
        let h3 = quic.map(|q| {
            tokio::spawn(crate::http3::run(
                state.clone(),
                self.inner.service.clone(),
                q,
                self.inner.stop.clone(),
                opts.drain_timeout,
            ))
        });
        let res = crate::serve::run(
            state.clone(),
            self.inner.service.clone(),
            listener,
            self.inner.stop.clone(),
            opts.drain_timeout,
            alt_svc,
        )
        .await;
        if let Some(h3) = h3 {
            let _ = h3.await;
        }
        let s = state.clone();
        let _ = tokio::task::spawn_blocking(move || crate::health::on_stop(&s, Duration::from_secs(3))).await;
        res
    }
}

/// SIGHUP re-reads the certificate files: new connections get the new certificate, open
/// ones keep theirs (nothing is dropped); unreadable files keep the old one, with a warning.
fn reload_on_sighup(
    tls: Arc<crate::tls::TlsAcceptor>,
    quic: Option<Arc<crate::http3::QuicListener>>,
    stop: ShutdownHandle,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot watch SIGHUP: TLS certificates will not be reloaded");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            match tls.reload().and_then(|()| quic.as_ref().map_or(Ok(()), |q| q.reload())) {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(e) => tracing::warn!(error = %e, "SIGHUP: TLS reload failed; keeping the old certificate"),
            }
        }
    });
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

fn signals() -> Option<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    Some((
        signal(SignalKind::terminate()).ok()?,
        signal(SignalKind::interrupt()).ok()?,
    ))
}
