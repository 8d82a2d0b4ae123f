//! Listener, connections and graceful shutdown.
//!
//! One accept loop per worker process (workers bind the same port with
//! SO_REUSEPORT). Each connection is served by hyper's auto builder, which speaks
//! HTTP/1.1 and detects HTTP/2 prior knowledge on the same port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
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

use crate::error::{Error, Result};
use crate::problem::{problem_body, PROBLEM_JSON};
use crate::service::{handle, AppState, ConnInfo};

/// Bind a TCP listener with SO_REUSEPORT (so worker processes share the port).
pub fn bind_reuseport(addr: SocketAddr) -> Result<std::net::TcpListener> {
    let bind_err = |source| Error::Bind { addr: addr.to_string(), source };
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
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

/// A bound server, ready to run.
pub struct Server {
    state: Arc<AppState>,
    listener: std::net::TcpListener,
}

/// Counts live connections so a drain can wait for them.
#[derive(Default)]
struct Live {
    count: AtomicU64,
    idle: tokio::sync::Notify,
}

impl Server {
    /// Bind to `config.host:config.port`.
    pub fn bind(state: Arc<AppState>) -> Result<Self> {
        let host = state.config.host.trim_start_matches('[').trim_end_matches(']');
        let ip: std::net::IpAddr = match host {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            h => h.parse().map_err(|_| Error::Bind {
                addr: state.config.host.clone(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not an IP address"),
            })?,
        };
        let listener = bind_reuseport(SocketAddr::new(ip, state.config.port))?;
        Ok(Self { state, listener })
    }

    /// Use an already bound listener (inherited from a supervisor, or a test's port 0).
    pub fn from_listener(state: Arc<AppState>, listener: std::net::TcpListener) -> Result<Self> {
        listener.set_nonblocking(true)?;
        Ok(Self { state, listener })
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serve until `shutdown` is cancelled; then stop accepting, let in-flight
    /// requests finish (at most `drain` long) and return.
    pub async fn run(self, shutdown: ShutdownHandle, drain: Duration) -> Result<()> {
        let listener = TcpListener::from_std(self.listener)?;
        let state = self.state;
        let builder = Arc::new(conn_builder(&state));
        let permits = Arc::new(Semaphore::new(usize::try_from(state.config.limits.max_connections).unwrap_or(10_000)));
        let live = Arc::new(Live::default());
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tokio::spawn(reject_busy(stream));
                continue;
            };
            live.count.fetch_add(1, Ordering::AcqRel);
            let (state, builder, live, shutdown) = (state.clone(), builder.clone(), live.clone(), shutdown.clone());
            tokio::spawn(async move {
                serve_connection(state, &builder, stream, peer, shutdown).await;
                drop(permit);
                if live.count.fetch_sub(1, Ordering::AcqRel) == 1 {
                    live.idle.notify_waiters();
                }
            });
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
}

fn conn_builder(state: &AppState) -> auto::Builder<TokioExecutor> {
    let cfg = &state.config;
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's read buffer bounds the request head; it refuses values under 8 KiB.
    let max_buf = usize::try_from(cfg.limits.max_header_size).unwrap_or(usize::MAX).max(8192);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs_f64(cfg.timeouts.read_header))
        .max_buf_size(max_buf)
        .max_headers(usize::try_from(cfg.limits.max_headers).unwrap_or(100))
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2.max_concurrent_streams)
        .initial_stream_window_size(cfg.http2.initial_window_size)
        .max_frame_size(cfg.http2.max_frame_size)
        .max_header_list_size(u32::try_from(cfg.limits.max_header_size).unwrap_or(u32::MAX));
    b
}

/// Answer a connection over `max_connections` with 503 and close it.
async fn reject_busy(mut stream: TcpStream) {
    let body = problem_body(
        http::StatusCode::SERVICE_UNAVAILABLE,
        Some("the server has reached its connection limit"),
        None,
    );
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(&body).await?;
        stream.shutdown().await
    })
    .await;
}

async fn serve_connection(
    state: Arc<AppState>,
    builder: &auto::Builder<TokioExecutor>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: ShutdownHandle,
) {
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(ActivityIo { inner: stream, activity: activity.clone() });
    let info = ConnInfo::new(Some(peer), false);
    let inflight = info.inflight.clone();
    let svc_state = state.clone();
    let service = service_fn(move |req| {
        let (state, info) = (svc_state.clone(), info.clone());
        async move { Ok::<_, std::convert::Infallible>(handle(state, info, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    let idle = Duration::from_secs_f64(state.config.timeouts.idle);
    let mut closing = false;
    tokio::select! {
        res = conn.as_mut() => { log_conn_result(res); return; }
        () = shutdown.cancelled() => {}
        () = idle_watch(activity, inflight, idle) => { closing = true; }
    }
    // Drain: hyper finishes in-flight requests, then closes.
    conn.as_mut().graceful_shutdown();
    if !closing {
        tracing::debug!(%peer, "draining connection");
    }
    log_conn_result(conn.await);
}

fn log_conn_result(res: std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>) {
    if let Err(e) = res {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Resolves once the connection has seen no I/O and no request for `idle`.
async fn idle_watch(activity: Arc<AtomicU64>, inflight: Arc<AtomicU64>, idle: Duration) {
    let tick = (idle / 4).max(Duration::from_millis(25));
    let mut last = activity.load(Ordering::Relaxed);
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let now = activity.load(Ordering::Relaxed);
        if now != last || inflight.load(Ordering::Relaxed) > 0 {
            last = now;
            quiet_since = Instant::now();
        } else if quiet_since.elapsed() >= idle {
            return;
        }
    }
}

pin_project! {
    /// A stream that counts reads and writes, for the idle timer.
    struct ActivityIo<S> {
        #[pin]
        inner: S,
        activity: Arc<AtomicU64>,
    }
}

impl<S: AsyncRead> AsyncRead for ActivityIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if buf.filled().len() != before {
            this.activity.fetch_add(1, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite> AsyncWrite for ActivityIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.activity.fetch_add(1, Ordering::Relaxed);
        this.inner.poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        this.activity.fetch_add(1, Ordering::Relaxed);
        this.inner.poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Convenience for callers that hold a future to wait on instead of a token.
pub async fn cancel_on<F: Future<Output = ()>>(f: F, token: ShutdownHandle) {
    f.await;
    token.cancel();
}
