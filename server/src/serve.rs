//! Listener, connections and graceful shutdown.
//!
//! One accept loop per worker process (workers bind the same port with
//! SO_REUSEPORT). Each connection is served by hyper's auto builder, which speaks
//! HTTP/1.1 and detects HTTP/2 prior knowledge on the same port.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
pub use tokio_util::sync::CancellationToken as ShutdownHandle;

use crate::body::RequestBody;
use crate::error::{Error, Result};
use crate::problem::{problem_body, PROBLEM_JSON};
use crate::service::{AppState, Budgets, ConnActivity, ConnInfo};
use crate::stack::HttpService;
use crate::tls::{ClientCert, TlsAcceptor};

/// Bind a TCP listener with SO_REUSEPORT (so worker processes share the port).
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let bind_err = |source| Error::Bind {
        addr: addr.to_string(),
        source,
    };
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP)).map_err(bind_err)?;
    sock.set_reuse_address(true).map_err(bind_err)?;
    sock.set_reuse_port(true).map_err(bind_err)?;
    if addr.is_ipv6() {
        // `::` serves IPv4 too, as users expect from `--host ::`.
        let _ = sock.set_only_v6(false);
    }
    sock.set_nonblocking(true).map_err(bind_err)?;
    sock.bind(&addr.into()).map_err(bind_err)?;
    sock.listen(2048).map_err(bind_err)?;
    Ok(sock.into())
}

/// Fail with `AddrInUse` when another socket holds `addr`: a bind without SO_REUSEPORT
/// conflicts even with SO_REUSEPORT listeners of this user, which a normal bind would
/// silently share the port with.
pub fn probe_port_free(addr: SocketAddr) -> Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    std::net::TcpListener::bind(addr)
        .map(drop)
        .map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })
}

/// `config.host:config.port` as a socket address (`localhost` is 127.0.0.1).
pub fn config_addr(config: &cello_config::ServerConfig) -> Result<SocketAddr> {
    let host = config.host.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.parse().map_err(|_| Error::Bind {
            addr: config.host.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not an IP address"),
        })?,
    };
    Ok(SocketAddr::new(ip, config.port))
}

/// A bound listener (the accept loop hands each connection's stream to the same stack).
pub enum Listener {
    /// Plain TCP (HTTP/1.1 and HTTP/2 prior knowledge).
    Tcp(std::net::TcpListener),
    /// TLS over TCP: each connection is handshaken first (ALPN `h2` or `http/1.1`).
    Tls(std::net::TcpListener, Arc<TlsAcceptor>),
}

impl Listener {
    /// Bind TCP with SO_REUSEPORT.
    pub fn bind_tcp(addr: SocketAddr) -> Result<Self> {
        Ok(Self::Tcp(bind_reuseport(addr)?))
    }

    /// An already bound listener (inherited from a supervisor, or a test's port 0).
    pub fn from_std(listener: std::net::TcpListener) -> Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self::Tcp(listener))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        match self {
            Self::Tcp(l) | Self::Tls(l, _) => Ok(l.local_addr()?),
        }
    }
}

/// Counts live connections so a drain can wait for them.
#[derive(Default)]
struct Live {
    count: AtomicU64,
    idle: tokio::sync::Notify,
}

/// A connection's claim on `max_connections` and on the drain: released when the last
/// holder lets go. Requests see it as a [`ConnHold`], so a connection that outlives its
/// HTTP exchange (a WebSocket after the upgrade) keeps counting and hears the drain.
pub struct ConnLease {
    _slot: Slot,
    live: Arc<Live>,
    /// Cancelled when the server starts draining.
    pub shutdown: ShutdownHandle,
}

impl Drop for ConnLease {
    fn drop(&mut self) {
        if self.live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.live.idle.notify_waiters();
        }
    }
}

/// Connection slots beyond `max_connections` kept for probes: a connection admitted on
/// one may only ask for `/health/*` or `/metrics` (anything else gets 503), and is closed
/// after its answer, so Kubernetes can still tell a busy server from a dead one.
pub const PROBE_RESERVE: usize = 16;

/// How long the small rest of a body a response did not read may take to arrive before the
/// connection is closed instead (`body::drain_rest`).
const LEFTOVER_WAIT: Duration = Duration::from_secs(1);

/// Admission: `max_connections` slots, the probe reserve, and per-address counts
/// (`max_connections_per_ip`).
struct Slots {
    main: Arc<Semaphore>,
    // `None` when no probe is served (nothing to reserve for).
    reserve: Option<Arc<Semaphore>>,
    per_ip: Option<(u64, IpCounts)>,
}

/// A held connection slot (released on drop).
struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _ip: Option<IpSlot>,
    reserved: bool,
}

impl Slot {
    fn reserved(&self) -> bool {
        self.reserved
    }
}

type IpCounts = Arc<std::sync::Mutex<HashMap<IpAddr, u64>>>;

/// One connection counted against its address (`max_connections_per_ip`).
struct IpSlot(IpAddr, IpCounts);

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut map = self.1.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.0) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.0);
            }
        }
    }
}

/// Request extension: a weak handle on the connection's [`ConnLease`] (weak, so a request
/// object kept alive by a handler never holds a connection slot).
#[derive(Clone)]
pub struct ConnHold(pub std::sync::Weak<ConnLease>);

/// An IPv4 client seen through a dual-stack socket counts as its IPv4 address.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

impl Slots {
    fn new(state: &AppState) -> Self {
        let limits = &state.config.limits;
        let probes = state.health.is_some() || state.metrics.is_some();
        Self {
            main: Arc::new(Semaphore::new(
                usize::try_from(limits.max_connections).unwrap_or(10_000),
            )),
            reserve: probes.then(|| Arc::new(Semaphore::new(PROBE_RESERVE))),
            per_ip: limits.max_connections_per_ip.map(|n| (n, Arc::default())),
        }
    }

    /// A slot for a connection from `ip`, or why there is none.
    fn admit(&self, ip: IpAddr) -> std::result::Result<Slot, Refusal> {
        let ip_slot = match &self.per_ip {
            Some((max, map)) => {
                let ip = canonical_ip(ip);
                let mut m = map.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let n = m.entry(ip).or_insert(0);
                if *n >= *max {
                    return Err(Refusal::PerIp);
                }
                *n += 1;
                Some(IpSlot(ip, map.clone()))
            }
            None => None,
        };
        let (permit, reserved) = match self.main.clone().try_acquire_owned() {
            Ok(p) => (p, false),
            Err(_) => match self.reserve.as_ref().map(|r| r.clone().try_acquire_owned()) {
                Some(Ok(p)) => (p, true),
                // `ip_slot` drops here: the address gets its count back.
                _ => return Err(Refusal::Busy),
            },
        };
        Ok(Slot {
            _permit: permit,
            _ip: ip_slot,
            reserved,
        })
    }
}

/// Serve until `shutdown` is cancelled; then stop accepting, let in-flight requests
/// finish (at most `drain` long) and return.
pub(crate) async fn run(
    state: Arc<AppState>,
    service: HttpService,
    listener: Listener,
    shutdown: ShutdownHandle,
    drain: Duration,
    alt_svc: Option<http::HeaderValue>,
) -> Result<()> {
    let (listener, tls) = match listener {
        Listener::Tcp(l) => (l, None),
        Listener::Tls(l, t) => (l, Some(t)),
    };
    let listener = TcpListener::from_std(listener)?;
    let builder = Arc::new(conn_builder(&state));
    let slots = Arc::new(Slots::new(&state));
    let live = Arc::new(Live::default());
    let spawn_conn = |stream: TcpStream, peer: SocketAddr| {
        let _ = stream.set_nodelay(true);
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tokio::spawn(reject(stream, why));
                return;
            }
        };
        live.count.fetch_add(1, Ordering::AcqRel);
        let reserved = slot.reserved();
        let lease = Arc::new(ConnLease {
            _slot: slot,
            live: live.clone(),
            shutdown: shutdown.clone(),
        });
        let (state, service, builder, shutdown, tls) = (
            state.clone(),
            service.clone(),
            builder.clone(),
            shutdown.clone(),
            tls.clone(),
        );
        let extras = Extras {
            alt_svc: alt_svc.clone(),
            accepted: Some(Instant::now()),
            ..Extras::default()
        };
        tokio::spawn(async move {
            let hold = ConnHold(Arc::downgrade(&lease));
            match tls {
                None => {
                    serve_connection(
                        &state, service, &builder, stream, peer, extras, shutdown, hold, reserved,
                    )
                    .await
                }
                Some(tls) => {
                    serve_tls(
                        &state, service, &builder, stream, peer, &tls, extras, shutdown, hold, reserved,
                    )
                    .await
                }
            }
            drop(lease);
        });
    };
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => spawn_conn(stream, peer),
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // Closing a listener resets the connections still in its accept queue: serve
    // those first (a rolling restart must not drop what the kernel gave us).
    let listener = listener.into_std()?;
    while let Ok((stream, peer)) = listener.accept() {
        if stream.set_nonblocking(true).is_ok() {
            if let Ok(stream) = TcpStream::from_std(stream) {
                spawn_conn(stream, peer);
            }
        }
    }
    drop(listener);
    let deadline = tokio::time::Instant::now() + drain;
    while live.count.load(Ordering::Acquire) > 0 {
        let notified = live.idle.notified();
        if live.count.load(Ordering::Acquire) == 0 {
            break;
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            tracing::warn!(open = live.count.load(Ordering::Acquire), "drain timed out");
            break;
        }
    }
    Ok(())
}

fn conn_builder(state: &AppState) -> auto::Builder<TokioExecutor> {
    let cfg = &state.config;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's read buffer bounds the request head; it refuses values under 8 KiB.
    let max_buf = usize::try_from(cfg.limits.max_header_size)
        .unwrap_or(usize::MAX)
        .max(8192);
    b.http1()
        .timer(TokioTimer::new())
        // hyper's own header timer also fires on idle keep-alive connections, so
        // the connection watchdog enforces `read_header` instead.
        .header_read_timeout(None)
        .max_buf_size(max_buf)
        .max_headers(usize::try_from(cfg.limits.max_headers).unwrap_or(100))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2.max_concurrent_streams)
        .initial_stream_window_size(cfg.http2.initial_window_size)
        .max_frame_size(cfg.http2.max_frame_size)
        // The connection window is at least the stream window, so one stream can use all of it.
        .initial_connection_window_size(cfg.http2.initial_window_size.max(1 << 20))
        .max_header_list_size(u32::try_from(cfg.limits.max_header_size).unwrap_or(u32::MAX))
        .keep_alive_interval(cfg.http2.keep_alive_interval.map(Duration::from_secs_f64))
        .keep_alive_timeout(Duration::from_secs_f64(cfg.http2.keep_alive_timeout));
    b
}

/// Why a connection is turned away at accept.
#[derive(Clone, Copy)]
enum Refusal {
    /// `max_connections` (and the probe reserve) are taken: 503.
    Busy,
    /// The client's address holds `max_connections_per_ip` connections: 429.
    PerIp,
}

/// Answer a refused connection with a problem+json and close it.
async fn reject(mut stream: TcpStream, why: Refusal) {
    let (status, detail) = match why {
        Refusal::Busy => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the server has reached its connection limit",
        ),
        Refusal::PerIp => (
            http::StatusCode::TOO_MANY_REQUESTS,
            "too many connections from this address",
        ),
    };
    let body = problem_body(status, Some(detail), None);
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

/// Per-connection facts beside the stream: TLS, the client certificate, `Alt-Svc`.
#[derive(Clone, Default)]
struct Extras {
    tls: bool,
    client_cert: Option<ClientCert>,
    /// Advertised on every response when HTTP/3 is on.
    alt_svc: Option<http::HeaderValue>,
    /// When the connection was accepted: the first request head is due `read_header`
    /// after it, a TLS handshake included.
    accepted: Option<Instant>,
}

/// Handshake, then serve. The handshake counts against `read_header` (a client that never
/// finishes it is cut off); plain HTTP sent to the TLS port gets a 400 problem and a close.
#[allow(clippy::too_many_arguments)]
async fn serve_tls(
    state: &AppState,
    service: HttpService,
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    tls: &TlsAcceptor,
    extras: Extras,
    shutdown: ShutdownHandle,
    hold: ConnHold,
    reserved: bool,
) {
    let read_header = Duration::from_secs_f64(state.config.timeouts.read_header);
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            // 0x16: a TLS handshake record; anything else is not TLS.
            Ok(1) if first[0] == 0x16 => {}
            Ok(1) => {
                refuse_plain_http(stream).await;
                return None;
            }
            _ => return None,
        }
        match tls.acceptor().accept(stream).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                None
            }
        }
    };
    match tokio::time::timeout(read_header, handshake).await {
        Ok(Some(stream)) => {
            let extras = Extras {
                tls: true,
                client_cert: crate::tls::client_cert(stream.get_ref().1),
                ..extras
            };
            serve_connection(state, service, builder, stream, peer, extras, shutdown, hold, reserved).await;
        }
        Ok(None) => {}
        Err(_) => tracing::debug!(%peer, "TLS handshake not completed in time; closing"),
    }
}

/// Plain HTTP on the TLS port: say so in a problem+json 400 (readable by the client that
/// made the mistake) and close.
async fn refuse_plain_http(mut stream: TcpStream) {
    let body = problem_body(
        http::StatusCode::BAD_REQUEST,
        Some("this port serves HTTPS: the request was sent as plain HTTP"),
        None,
    );
    let head = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    }
    .await;
}

/// Serve one connection (plain TCP or an established TLS stream).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S>(
    state: &AppState,
    service: HttpService,
    builder: &auto::Builder<TokioExecutor>,
    stream: S,
    peer: SocketAddr,
    extras: Extras,
    shutdown: ShutdownHandle,
    hold: ConnHold,
    reserved: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut info = ConnInfo::new(Some(peer), extras.tls);
    info.budgets = Some(state.budgets.clone());
    info.hold = Some(hold);
    // The first request's head is due `read_header` after accept (a TLS handshake, when
    // there is one, ran inside this deadline already): a silent connection is not idle.
    // Timer marks count from the epoch, so the epoch is the accept.
    if let Some(accepted) = extras.accepted {
        info.epoch = accepted;
    }
    info.activity.head_since_ms.store(1, Ordering::Release);
    info.activity.reserved.store(reserved, Ordering::Relaxed);
    let _unsent = UnsentGuard(info.activity.clone(), state.budgets.clone());
    let Extras {
        client_cert, alt_svc, ..
    } = extras;
    // Cloned per request as an `Arc`: a token's own clone and drop each take its lock.
    let draining = Arc::new(shutdown.clone());
    let io = TokioIo::new(ConnIo {
        inner: stream,
        activity: info.activity.clone(),
        budgets: state.budgets.clone(),
        epoch: info.epoch,
        first_read: true,
        scan: HeadScan::default(),
        chunks: ChunkWatch::default(),
        chunk_error: false,
        chunk_limit: state.max_body_limit(),
        pending: None,
        write_timeout: Duration::from_secs_f64(state.config.timeouts.write),
        write_stall: None,
    });
    let (activity, epoch) = (info.activity.clone(), info.epoch);
    let conn_activity = info.activity.clone();
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let h1 = req.version() <= http::Version::HTTP_11;
        let draining = draining.clone();
        // HTTP/1 bodies are watched so an answer given before the body was read can say
        // `Connection: close` (body.rs, `WatchedIncoming`); body-less requests pay nothing.
        let watched = h1 && !hyper::body::Body::is_end_stream(req.body());
        let mut req = if watched {
            let activity = conn_activity.clone();
            let keep_small = !req.headers().contains_key(http::header::EXPECT);
            req.map(|b| RequestBody::Watched(crate::body::WatchedIncoming::new(b, activity, keep_small)))
        } else {
            req.map(RequestBody::Incoming)
        };
        let unread_mark = watched.then(|| conn_activity.clone());
        // One extension for the connection's facts (the map allocates per request).
        req.extensions_mut().insert(info.clone());
        if let Some(cert) = &client_cert {
            req.extensions_mut().insert(cert.clone());
        }
        let (fut, alt_svc) = (service.run(req), alt_svc.clone());
        async move {
            let mut resp = fut.await?;
            if let Some(v) = alt_svc {
                resp.headers_mut().entry(http::header::ALT_SVC).or_insert(v);
            }
            // Draining: this response is the connection's last, and says so. The client
            // then opens a new connection for its next request instead of sending it on
            // one that is about to close (lost, as it may not be safe to retry).
            // An unread body: hyper closes the connection after this response (it drains one
            // read's worth at most), so the head must not promise keep-alive — unless its small
            // rest is read here first.
            let mut unread = false;
            if let Some(act) = &unread_mark {
                let rest = std::mem::take(&mut *act.leftover.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
                if let crate::body::Leftover::Kept(rest) = rest {
                    unread = !crate::body::drain_rest(rest, LEFTOVER_WAIT).await;
                }
                unread |= act.body_unread.load(Ordering::Relaxed);
            }
            if h1 && (unread || draining.is_cancelled()) && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
                resp.headers_mut()
                    .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let timeouts = &state.config.timeouts;
    let limits = WatchLimits {
        idle: Duration::from_secs_f64(timeouts.idle),
        read_header: Duration::from_secs_f64(timeouts.read_header),
        write: Duration::from_secs_f64(timeouts.write),
    };
    let mut bound = None;
    tokio::select! {
        // Polled in this order on every wake-up (no random start: the connection first).
        biased;
        res = conn.as_mut() => { log_conn_result(res); return; }
        () = shutdown.cancelled() => {
            // HTTP/1 has no GOAWAY: close only where no request can be lost (HTTP/2's
            // GOAWAY below names the last stream served, so its clients know what to retry).
            if !activity.h2.load(Ordering::Relaxed) {
                tokio::select! {
                    // hyper first: a request that arrived since the last check is read (and
                    // counted) before the drain point can call the connection quiet.
                    biased;
                    res = conn.as_mut() => { log_conn_result(res); return; }
                    () = h1_drain_point(&activity, epoch, &limits) => {}
                }
            }
        }
        end = conn_watch(&activity, epoch, &limits) => match end {
            WatchEnd::SlowHead => {
                // A client that never finishes its head gets no more of our time.
                tracing::debug!(%peer, "request head not received in time; closing");
                return;
            }
            WatchEnd::Stalled => {
                tracing::debug!(%peer, "HTTP/2 peer does not read its responses; closing");
                return;
            }
            // Idle: what is left is at most response data being flushed.
            WatchEnd::Idle => bound = Some(limits.write),
            WatchEnd::Goaway => {}
        }
    }
    // Drain: hyper finishes in-flight requests (HTTP/2: GOAWAY), then closes.
    conn.as_mut().graceful_shutdown();
    match bound {
        Some(b) => match tokio::time::timeout(b, conn).await {
            Ok(res) => log_conn_result(res),
            Err(_) => tracing::debug!(%peer, "connection did not finish after GOAWAY; closing"),
        },
        None => log_conn_result(conn.await),
    }
}

/// Gives a closed connection's unsent HTTP/2 bytes back to the global count.
struct UnsentGuard(Arc<ConnActivity>, Arc<Budgets>);

impl Drop for UnsentGuard {
    fn drop(&mut self) {
        let left = self.0.unsent.swap(0, Ordering::AcqRel);
        if left > 0 {
            let _ = self
                .1
                .h2_unsent
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(left)));
        }
    }
}

/// How long an HTTP/1 connection must be quiet, during a drain, before it is closed
/// between requests: a client that has just read a response may already be sending its
/// next request on the connection.
const DRAIN_QUIET: Duration = Duration::from_secs(1);

/// HTTP/1 during a drain: resolves when the connection can be closed without losing a
/// request. Requests in flight are answered (with `Connection: close`, which ends the
/// connection by itself); a request head that has begun gets until its `read_header`
/// deadline (for a new connection: since accept); otherwise the connection is closed once
/// nothing has moved on it for [`DRAIN_QUIET`] (or `idle`, if shorter).
async fn h1_drain_point(act: &ConnActivity, epoch: Instant, lim: &WatchLimits) {
    let quiet = DRAIN_QUIET.min(lim.idle);
    let mut last = act.io_events.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let events = act.io_events.load(Ordering::Relaxed);
        if events != last || act.inflight.load(Ordering::Acquire) > 0 {
            last = events;
            quiet_since = Instant::now();
            continue;
        }
        let head = act.head_since_ms.load(Ordering::Acquire);
        if head > 0 {
            if millis(epoch.elapsed()).saturating_sub(head) >= millis(lim.read_header) {
                return;
            }
        } else if quiet_since.elapsed() >= quiet {
            return;
        }
    }
}

fn log_conn_result(res: std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

#[derive(Debug, PartialEq, Eq)]
enum WatchEnd {
    /// Nothing happened for `idle` (HTTP/2: no open stream for `idle`, whatever control
    /// frames the peer sends).
    Idle,
    /// A request head (the first one: since accept) took longer than `read_header`.
    SlowHead,
    /// HTTP/2 `max_requests_per_connection` reached: GOAWAY.
    Goaway,
    /// HTTP/2 response data waits unsent and the socket took nothing for `write`.
    Stalled,
}

struct WatchLimits {
    idle: Duration,
    read_header: Duration,
    write: Duration,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Resolves when the connection should end (see [`WatchEnd`]).
async fn conn_watch(act: &ConnActivity, epoch: Instant, lim: &WatchLimits) -> WatchEnd {
    let tick =
        (lim.idle.min(lim.read_header).min(lim.write) / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut last = act.io_events.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    let mut last_written = act.written.load(Ordering::Relaxed);
    let mut write_since = Instant::now();
    let sleep = tokio::time::sleep(tick);
    tokio::pin!(sleep);
    loop {
        // The next tick, or a GOAWAY request. This runs on every wake-up of the connection's
        // task (once or twice per request): a flag, a waker registration and the timer,
        // no lock and no random branch order.
        std::future::poll_fn(|cx| {
            if act.goaway.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            act.wake.register(cx.waker());
            if act.goaway.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            std::future::Future::poll(sleep.as_mut(), cx)
        })
        .await;
        sleep.as_mut().reset(tokio::time::Instant::now() + tick);
        if act.goaway.load(Ordering::Acquire) {
            return WatchEnd::Goaway;
        }
        let busy = act.inflight.load(Ordering::Acquire) > 0;
        let head = act.head_since_ms.load(Ordering::Acquire);
        if !busy && head > 0 && millis(epoch.elapsed()).saturating_sub(head) >= millis(lim.read_header) {
            return WatchEnd::SlowHead;
        }
        if act.h2.load(Ordering::Relaxed) {
            // Control frames (PING, SETTINGS, WINDOW_UPDATE) are no reason to stay open.
            if busy || act.streams.load(Ordering::Acquire) > 0 {
                quiet_since = Instant::now();
            } else if quiet_since.elapsed() >= lim.idle {
                return WatchEnd::Idle;
            }
            let written = act.written.load(Ordering::Relaxed);
            if written != last_written || act.unsent.load(Ordering::Acquire) == 0 {
                last_written = written;
                write_since = Instant::now();
            } else if write_since.elapsed() >= lim.write {
                return WatchEnd::Stalled;
            }
            continue;
        }
        let now = act.io_events.load(Ordering::Relaxed);
        if now != last || busy {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= lim.idle {
            return WatchEnd::Idle;
        }
    }
}

/// Finds bare-LF line endings in a request head (RFC 9112 §2.2 lets a server reject
/// them; accepting them is how request smuggling through lenient proxies starts).
#[derive(Default)]
struct HeadScan {
    // Scanning a head now.
    active: bool,
    prev: u8,
    // Consecutive line ends seen (two: the head is complete).
    ends: u8,
    // Bytes of `transfer-encoding:` matched at the start of this line, and whether the
    // line still matches.
    te: u8,
    te_miss: bool,
    // Bytes of `chunked` matched on a Transfer-Encoding line.
    ck: u8,
    // The head declares a chunked body.
    chunked: bool,
}

const TE_NAME: &[u8] = b"transfer-encoding:";
const CHUNKED: &[u8] = b"chunked";

/// What [`HeadScan::feed`] found.
#[derive(Debug, PartialEq, Eq)]
enum Scanned {
    /// The head goes on in the next read.
    More,
    /// A bare LF before the end of the head.
    BareLf,
    /// The head ends at this offset of the bytes fed.
    End(usize),
}

impl HeadScan {
    fn feed(&mut self, bytes: &[u8]) -> Scanned {
        let mut i = 0;
        while let Some(&b) = bytes.get(i) {
            if self.te_miss && self.ends == 0 {
                // The rest of this line cannot be `Transfer-Encoding`: byte by byte it
                // would only update `prev`, so jump to its LF (most lines: after one byte).
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(n) if n > 0 => {
                        self.prev = bytes[i + n - 1];
                        i += n;
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        self.prev = bytes[bytes.len() - 1];
                        return Scanned::More;
                    }
                }
            }
            match b {
                b'\n' if self.prev != b'\r' => return Scanned::BareLf,
                b'\n' => {
                    self.ends += 1;
                    (self.te, self.te_miss, self.ck) = (0, false, 0);
                    if self.ends == 2 {
                        self.active = false;
                        return Scanned::End(i + 1);
                    }
                }
                b'\r' => {}
                _ => {
                    self.ends = 0;
                    self.match_te(b.to_ascii_lowercase());
                }
            }
            self.prev = b;
            i += 1;
        }
        Scanned::More
    }
}

impl HeadScan {
    /// Follow `Transfer-Encoding: ... chunked` across reads, one (lowercased) byte at a time.
    fn match_te(&mut self, b: u8) {
        let n = usize::from(self.te);
        if n < TE_NAME.len() {
            if !self.te_miss && TE_NAME[n] == b {
                self.te += 1;
            } else {
                self.te_miss = true;
            }
            return;
        }
        if CHUNKED.get(usize::from(self.ck)) == Some(&b) {
            self.ck += 1;
            if usize::from(self.ck) == CHUNKED.len() {
                self.chunked = true;
            }
        } else {
            self.ck = u8::from(b == CHUNKED[0]);
        }
    }
}

/// Follows the chunk-size lines of a chunked request body, to refuse a declared chunk
/// larger than any body limit at once (413) instead of waiting for its bytes until the
/// body timeout.
#[derive(Default)]
struct ChunkWatch {
    state: ChunkState,
    size: u64,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Not in a chunked body.
    #[default]
    Off,
    /// Hex digits of a size line.
    Size,
    /// The rest of a size line (extensions), up to its LF.
    SizeRest,
    /// Chunk data still to come, then CRLF.
    Data(u64),
    /// CR or LF after chunk data.
    DataEnd,
}

/// Marks the read error hyper passes on when a declared chunk is too large.
#[derive(Debug, thiserror::Error)]
#[error("a chunk of the request body is larger than the body limit")]
pub struct ChunkTooLarge;

impl ChunkWatch {
    /// Follow `bytes`; `true` when a declared chunk exceeds `limit`.
    fn feed(&mut self, mut bytes: &[u8], limit: u64) -> bool {
        while !bytes.is_empty() {
            match self.state {
                ChunkState::Off => return false,
                ChunkState::Size => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match (b as char).to_digit(16) {
                        Some(d) => {
                            self.size = self.size.saturating_mul(16).saturating_add(u64::from(d));
                            if self.size > limit {
                                self.state = ChunkState::Off;
                                return true;
                            }
                        }
                        None if b == b'\n' => self.end_size_line(),
                        None => self.state = ChunkState::SizeRest,
                    }
                }
                ChunkState::SizeRest => match bytes.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        bytes = &bytes[i + 1..];
                        self.end_size_line();
                    }
                    None => return false,
                },
                ChunkState::Data(left) => {
                    let n = u64::try_from(bytes.len()).unwrap_or(u64::MAX).min(left);
                    bytes = &bytes[usize::try_from(n).unwrap_or(bytes.len())..];
                    self.state = if n == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - n)
                    };
                }
                ChunkState::DataEnd => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if b == b'\n' {
                        self.state = ChunkState::Size;
                        self.size = 0;
                    }
                }
            }
        }
        false
    }

    fn end_size_line(&mut self) {
        // The last chunk: trailers and the next request are hyper's business.
        self.state = if self.size == 0 {
            ChunkState::Off
        } else {
            ChunkState::Data(self.size)
        };
    }
}

/// A read that starts a request head starts with a method token and a space.
fn looks_like_request_line(b: &[u8]) -> bool {
    let n = b.iter().take(8).take_while(|c| c.is_ascii_uppercase()).count();
    n >= 3 && b.get(n) == Some(&b' ')
}

/// The 400 a head with bare-LF line endings gets.
fn bare_lf_response() -> Vec<u8> {
    let status = http::StatusCode::BAD_REQUEST;
    let body = problem_body(status, Some("request lines must end with CRLF"), None);
    let mut out = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

pin_project! {
    /// The connection's stream: counts reads and writes for the idle timer, and turns
    /// hyper's own bodiless HTTP/1 error responses (400, 414, 431, ... written when a
    /// request cannot be parsed) into problem+json, like every other framework error.
    struct ConnIo<S> {
        #[pin]
        inner: S,
        activity: Arc<ConnActivity>,
        budgets: Arc<Budgets>,
        epoch: Instant,
        first_read: bool,
        scan: HeadScan,
        chunks: ChunkWatch,
        // A declared chunk was too large: the next read fails.
        chunk_error: bool,
        // No route takes a body larger than this.
        chunk_limit: u64,
        // A rewritten error response still being written, and how much of it is out.
        pending: Option<(Vec<u8>, usize)>,
        // `timeouts.write`: how long a write may make no progress.
        write_timeout: Duration,
        // Armed while the socket refuses our bytes (boxed: only stalled writes pay).
        write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

/// If `buf` is a response hyper generated for a parse error, the problem+json
/// replacement. hyper's are recognisable: an error status, `connection: close`,
/// `content-length: 0` and no content type.
fn rewrite_parse_error(buf: &[u8]) -> Option<Vec<u8>> {
    let rest = buf
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| buf.strip_prefix(b"HTTP/1.0 "))?;
    let code: u16 = std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()?;
    if !matches!(code, 400 | 408 | 413 | 414 | 431 | 505) {
        return None;
    }
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    if head_end + 4 != buf.len() {
        return None;
    }
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    if !head.contains("\r\nconnection: close")
        || !head.contains("\r\ncontent-length: 0")
        || head.contains("content-type")
    {
        return None;
    }
    let status = http::StatusCode::from_u16(code).ok()?;
    let detail = match code {
        400 => "the request could not be parsed",
        408 => "the request head was not received in time",
        414 => "the request target is too long",
        431 => "the request headers are too large or too many",
        505 => "the HTTP version is not supported",
        _ => "the request was rejected",
    };
    let body = problem_body(status, Some(detail), None);
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        code,
        status.canonical_reason().unwrap_or("Error"),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S> ConnIo<S> {
    /// Bytes the socket took: progress for the stall check, and (HTTP/2) unsent response
    /// data leaving (frame headers count too, so unsent is never overstated for long).
    fn count_written(&self, n: u64) {
        let act = &*self.activity;
        act.written.fetch_add(n, Ordering::Relaxed);
        let unsent = act.unsent.load(Ordering::Acquire);
        if unsent > 0 {
            let take = n.min(unsent);
            act.unsent.fetch_sub(take, Ordering::AcqRel);
            let _ = self
                .budgets
                .h2_unsent
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| Some(v.saturating_sub(take)));
        }
    }

    /// `timeouts.write`: a write that stays blocked that long (the client stopped
    /// reading) fails, which closes the connection.
    fn watch_write<T>(self: Pin<&mut Self>, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let this = self.project();
        if r.is_ready() {
            *this.write_stall = None;
            return r;
        }
        let timeout = *this.write_timeout;
        let stall = this
            .write_stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if std::future::Future::poll(stall.as_mut(), cx).is_ready() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )));
        }
        Poll::Pending
    }
}

impl<S: AsyncWrite> ConnIo<S> {
    /// Write out a pending rewritten response.
    fn poll_pending(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        while let Some((buf, off)) = this.pending.as_mut() {
            if *off >= buf.len() {
                *this.pending = None;
                break;
            }
            match this.inner.as_mut().poll_write(cx, &buf[*off..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *off += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite> AsyncRead for ConnIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut this = self.project();
        if std::mem::take(this.chunk_error) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, ChunkTooLarge)));
        }
        let before = buf.filled().len();
        let r = this.inner.as_mut().poll_read(cx, buf);
        let got = &buf.filled()[before..];
        if !got.is_empty() {
            let act = &**this.activity;
            act.io_events.fetch_add(1, Ordering::Relaxed);
            if std::mem::take(this.first_read) && got.starts_with(b"PRI * HTTP/2") {
                act.h2.store(true, Ordering::Relaxed);
                // HTTP/2 has no per-request head timer; its idle rule counts open streams.
                act.head_since_ms.store(0, Ordering::Release);
            }
            // Bytes with no request in flight are (part of) the next request head.
            if !act.h2.load(Ordering::Relaxed) && act.inflight.load(Ordering::Acquire) == 0 {
                if act.head_since_ms.load(Ordering::Acquire) == 0 {
                    act.head_since_ms
                        .store(millis(this.epoch.elapsed()).max(1), Ordering::Release);
                }
                let fresh = !this.scan.active && looks_like_request_line(got);
                if fresh {
                    *this.chunks = ChunkWatch::default();
                    *this.scan = HeadScan {
                        active: true,
                        ..HeadScan::default()
                    };
                }
                if this.scan.active {
                    match this.scan.feed(got) {
                        Scanned::More => {}
                        Scanned::BareLf => {
                            // Answer 400 ourselves and end the stream: hyper never sees the head.
                            this.scan.active = false;
                            buf.set_filled(before);
                            let out = bare_lf_response();
                            let n = match this.inner.as_mut().poll_write(cx, &out) {
                                Poll::Ready(Ok(n)) => n,
                                _ => 0,
                            };
                            *this.pending = Some((out, n));
                            return Poll::Ready(Ok(()));
                        }
                        Scanned::End(end) => {
                            if this.scan.chunked {
                                *this.chunks = ChunkWatch {
                                    state: ChunkState::Size,
                                    size: 0,
                                };
                                if this.chunks.feed(&got[end..], *this.chunk_limit) {
                                    // hyper gets the head now and the error with the body
                                    // (an error while it reads the head would just close).
                                    buf.set_filled(before + end);
                                    *this.chunk_error = true;
                                }
                            }
                        }
                    }
                }
                return r;
            }
            if this.chunks.state != ChunkState::Off && this.chunks.feed(got, *this.chunk_limit) {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, ChunkTooLarge)));
            }
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for ConnIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.pending.is_some() {
            match self.as_mut().poll_pending(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        self.activity.io_events.fetch_add(1, Ordering::Relaxed);
        // Only a complete error head (a few hundred bytes) can be hyper's, and only while
        // a head is pending that never reached the stack (a handler's own bodiless 400 is
        // written after the connection layer cleared `head_since_ms`).
        if buf.len() < 512 && buf.first() == Some(&b'H') && self.activity.head_since_ms.load(Ordering::Acquire) != 0 {
            if let Some(replacement) = rewrite_parse_error(buf) {
                *self.as_mut().project().pending = Some((replacement, 0));
                let _ = self.as_mut().poll_pending(cx);
                return Poll::Ready(Ok(buf.len()));
            }
        }
        let r = self.as_mut().project().inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.count_written(*n as u64);
        }
        self.watch_write(cx, r)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_pending(cx) {
            Poll::Ready(Ok(())) => {
                let r = self.as_mut().project().inner.poll_flush(cx);
                self.watch_write(cx, r)
            }
            other => other,
        }
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.as_mut().poll_pending(cx) {
            Poll::Ready(Ok(())) => self.project().inner.poll_shutdown(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_lf_is_found_only_inside_the_head() {
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\nHost: x\n\n"), Scanned::BareLf);
        let mut s = HeadScan::default();
        let ok = b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody\nwith\nlf";
        assert_eq!(s.feed(ok), Scanned::End(27));
        // Split across reads, CR in one read and LF in the next.
        let mut s = HeadScan::default();
        assert_eq!(s.feed(b"GET / HTTP/1.1\r"), Scanned::More);
        assert_eq!(s.feed(b"\nHost: x\r\n\r\n"), Scanned::End(12));
        assert!(looks_like_request_line(b"POST /x HTTP/1.1"));
        assert!(!looks_like_request_line(b"hello world"));
        assert!(!looks_like_request_line(b"\x16\x03\x01"));
    }

    #[test]
    fn chunk_sizes_over_the_limit_are_caught() {
        let declares_chunked = |reads: &[&[u8]]| {
            let mut s = HeadScan::default();
            reads.iter().for_each(|r| {
                s.feed(r);
            });
            s.chunked
        };
        assert!(declares_chunked(&[
            b"POST / HTTP/1.1\r\nTransfer-Enc",
            b"oding: gzip, Chunked\r\n\r\n"
        ]));
        assert!(!declares_chunked(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n"]));
        assert!(!declares_chunked(&[
            b"POST / HTTP/1.1\r\nX-Transfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!declares_chunked(&[b"POST /chunked HTTP/1.1\r\n\r\n"]));
        let watch = || ChunkWatch {
            state: ChunkState::Size,
            size: 0,
        };
        let mut w = watch();
        assert!(w.feed(b"FFFFFFFFFFFFFFFF\r\n", 1000));
        let mut w = watch();
        assert!(!w.feed(b"5\r\nhello\r\n3e8;x=y\r\n", 1000));
        assert!(!w.feed(&[b'a'; 1000], 1000));
        assert!(w.feed(b"\r\n3e9\r\n", 1000));
        let mut w = watch();
        assert!(!w.feed(b"0\r\n\r\n", 1000));
        assert!(w.state == ChunkState::Off);
    }

    #[tokio::test]
    async fn per_address_slots_are_counted_and_given_back() {
        let mut config = cello_config::ServerConfig::default();
        config.limits.max_connections = 2;
        config.limits.max_connections_per_ip = Some(1);
        config.health.enabled = true;
        let state = AppState::new(crate::router::RouterBuilder::new().build().unwrap(), config, None);
        let slots = Slots::new(&state);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let first = slots.admit(a).ok().unwrap();
        assert!(matches!(slots.admit(a), Err(Refusal::PerIp)));
        let second = slots.admit(b).ok().unwrap();
        assert!(!first.reserved() && !second.reserved());
        // max_connections taken: the probe reserve.
        let third = slots.admit("10.0.0.3".parse().unwrap()).ok().unwrap();
        assert!(third.reserved());
        drop(first);
        assert!(slots.admit(a).is_ok());
    }

    #[test]
    fn hyper_parse_errors_become_problem_json() {
        let hyper_431 = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 25 Nov 2026 04:18:45 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite_parse_error(hyper_431).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 "));
        assert!(out.contains("content-type: application/problem+json"));
        assert!(out.ends_with("\"status\":431,\"detail\":\"the request headers are too large or too many\"}"));
        // A handler's own response is never touched.
        assert!(rewrite_parse_error(
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        )
        .is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(rewrite_parse_error(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").is_none());
    }
}
