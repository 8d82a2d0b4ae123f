//! HTTP/3 over QUIC (quinn + h3): a UDP endpoint on the TCP listener's port number, with the
//! TLS certificate of `config.tls` (TLS 1.3, ALPN `h3`). Each request goes through the same
//! tower stack as HTTP/1.1 and HTTP/2; the drain sends GOAWAY, lets in-flight requests finish
//! and closes every connection with `H3_NO_ERROR`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use cello_config::{Http3Config, ServerConfig};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use crate::body::{RequestBody, ResponseBody};
use crate::error::{Error, Result};
use crate::problem::{problem_body, PROBLEM_JSON};
use crate::service::{AppState, ConnInfo};
use crate::stack::HttpService;
use crate::tls::ClientCert;

/// `H3_NO_ERROR`: the graceful close.
const H3_NO_ERROR: u32 = 0x100;

/// The `Alt-Svc` value HTTP/1.1 and HTTP/2 responses carry when HTTP/3 is on.
pub fn alt_svc(port: u16) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!("h3=\":{port}\"; ma=86400")).ok()
}

/// A bound QUIC endpoint.
pub struct QuicListener {
    endpoint: quinn::Endpoint,
    tls: cello_config::TlsConfig,
    h3: Http3Config,
}

fn quic_server_config(tls: &cello_config::TlsConfig, h3: &Http3Config) -> Result<quinn::ServerConfig> {
    let rustls = crate::tls::quic_rustls_config(tls)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls)
        .map_err(|e| Error::Tls(format!("QUIC needs a TLS 1.3 cipher suite: {e}")))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(Duration::from_secs_f64(h3.max_idle_timeout))
        .map_err(|e| Error::Tls(format!("http3.maxIdleTimeout: {e}")))?;
    transport.max_idle_timeout(Some(idle));
    transport.max_concurrent_bidi_streams(
        quinn::VarInt::from_u64(h3.initial_max_streams_bidi).unwrap_or(quinn::VarInt::MAX),
    );
    server.transport_config(Arc::new(transport));
    Ok(server)
}

impl QuicListener {
    /// Bind UDP `addr` (SO_REUSEPORT, like the TCP listener) and set up the endpoint.
    pub fn bind(addr: SocketAddr, config: &ServerConfig) -> Result<Self> {
        let (Some(tls), Some(h3)) = (&config.tls, &config.http3) else {
            return Err(Error::Tls("HTTP/3 needs the tls section".into()));
        };
        let bind_err = |source| Error::Bind {
            addr: format!("udp {addr}"),
            source,
        };
        let domain = if addr.is_ipv4() {
            socket2::Domain::IPV4
        } else {
            socket2::Domain::IPV6
        };
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP)).map_err(bind_err)?;
        sock.set_reuse_address(true).map_err(bind_err)?;
        sock.set_reuse_port(true).map_err(bind_err)?;
        if addr.is_ipv6() {
            let _ = sock.set_only_v6(false);
        }
        sock.set_nonblocking(true).map_err(bind_err)?;
        sock.bind(&addr.into()).map_err(bind_err)?;
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config
            .max_udp_payload_size(u16::try_from(h3.max_udp_payload_size).unwrap_or(u16::MAX))
            .map_err(|e| Error::Tls(format!("http3.maxUdpPayloadSize: {e}")))?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            Some(quic_server_config(tls, h3)?),
            sock.into(),
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self {
            endpoint,
            tls: tls.clone(),
            h3: h3.clone(),
        })
    }

    /// Re-read the certificate files for new connections (SIGHUP).
    pub fn reload(&self) -> Result<()> {
        self.endpoint
            .set_server_config(Some(quic_server_config(&self.tls, &self.h3)?));
        Ok(())
    }
}

/// Serve QUIC until `shutdown`; then GOAWAY every connection, let in-flight requests finish
/// (at most `drain`) and close.
pub(crate) async fn run(
    state: Arc<AppState>,
    service: HttpService,
    listener: Arc<QuicListener>,
    shutdown: CancellationToken,
    drain: Duration,
) {
    let endpoint = listener.endpoint.clone();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let incoming = tokio::select! {
            () = shutdown.cancelled() => break,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { break };
        let (state, service, shutdown) = (state.clone(), service.clone(), shutdown.clone());
        conns.spawn(async move { serve_conn(state, service, incoming, shutdown).await });
    }
    // New connection attempts are refused from now on.
    endpoint.set_server_config(None);
    let _ = tokio::time::timeout(drain, async { while conns.join_next().await.is_some() {} }).await;
    endpoint.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"server shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
}

fn peer_cert(conn: &quinn::Connection) -> Option<ClientCert> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    crate::tls::cert_subject(certs.first()?)
}

async fn serve_conn(
    state: Arc<AppState>,
    service: HttpService,
    incoming: quinn::Incoming,
    shutdown: CancellationToken,
) {
    let read_header = Duration::from_secs_f64(state.config.timeouts.read_header);
    let conn = match tokio::time::timeout(read_header, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => return,
    };
    let quic = conn.clone();
    let peer = conn.remote_address();
    let cert = peer_cert(&conn);
    let mut h3 = match h3::server::builder()
        .max_field_section_size(state.config.limits.max_header_size)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = tokio::task::JoinSet::new();
    let mut draining = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled(), if !draining => {
                draining = true;
                // GOAWAY: no new requests; the ones in flight finish.
                let _ = h3.shutdown(0).await;
                continue;
            }
            // Reap finished requests; once draining, the connection ends with its last one
            // (h3 itself would wait for the client to hang up).
            done = requests.join_next(), if draining || !requests.is_empty() => {
                if done.is_none() {
                    break;
                }
                continue;
            }
            a = h3.accept() => a,
        };
        match accepted {
            Ok(Some(resolver)) => {
                let (state, service, cert) = (state.clone(), service.clone(), cert.clone());
                requests.spawn(async move {
                    if let Ok((req, stream)) = resolver.resolve_request().await {
                        serve_request(&state, service, req, stream, peer, cert).await;
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/3 connection ended");
                break;
            }
        }
    }
    while requests.join_next().await.is_some() {}
    // CONNECTION_CLOSE discards stream data the peer has not acknowledged yet: give the
    // last responses a few round trips to land (or the client a chance to close first).
    let grace = (quic.rtt() * 3).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let _ = tokio::time::timeout(grace, quic.closed()).await;
    quic.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;
type RecvStream = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

fn problem(status: StatusCode, detail: &str) -> Response<ResponseBody> {
    let mut r = Response::new(ResponseBody::Full(Some(
        problem_body(status, Some(detail), None).into(),
    )));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    r
}

/// Read the request body (bounded by `max_body_size` and `read_body`), run the stack and
/// stream the response back; `send_data` waits for QUIC flow control, so a slow client
/// slows the body down instead of making us buffer it.
/// The request body of an HTTP/3 stream as a [`RequestBody`]: a task moves each DATA frame
/// into a small channel. When the request is dropped unread, the task ends and drops the
/// receive side, which stops the client's stream.
fn stream_body(mut recv: RecvStream) -> RequestBody {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let item = match recv.recv_data().await {
                Ok(Some(mut chunk)) => Ok(chunk.copy_to_bytes(chunk.remaining())),
                Ok(None) => return,
                Err(e) => Err(crate::body::BoxError::from(e.to_string())),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    RequestBody::Channel(rx)
}

async fn serve_request(
    state: &AppState,
    service: HttpService,
    req: Request<()>,
    stream: Stream,
    peer: SocketAddr,
    cert: Option<ClientCert>,
) {
    let (mut send, recv) = stream.split();
    let limit = state.config.limits.max_body_size;
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let resp = if declared.is_some_and(|n| n > limit) {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the request body is larger than the server accepts",
        )
    } else {
        // The body streams to the stack as it arrives, so its limit, read timeout, memory
        // budget and spooling apply exactly as over HTTP/1.1 and HTTP/2 (never buffered here).
        let (parts, ()) = req.into_parts();
        let mut req = Request::from_parts(parts, stream_body(recv));
        req.extensions_mut().insert(ConnInfo::new(Some(peer), true));
        if let Some(c) = cert {
            req.extensions_mut().insert(c);
        }
        match service.run(req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    };
    let (mut parts, mut body) = resp.into_parts();
    // Connection-specific headers do not exist in HTTP/3.
    for h in [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "proxy-connection",
    ] {
        parts.headers.remove(h);
    }
    if send.send_response(Response::from_parts(parts, ())).await.is_err() {
        return;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(_) => {
                // A body that fails midway must not look complete.
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() && send.send_data(data).await.is_err() {
                    return;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    let _ = send.send_trailers(trailers).await;
                    return;
                }
            }
        }
    }
    let _ = send.finish().await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use bytes::Buf;
    use tokio::sync::mpsc;

    use super::*;
    use crate::endpoint::RoutedRequest;
    use crate::{ServeOptions, Server, Target};

    const CHUNK: usize = 64 * 1024;
    /// Far more than any transport buffer: the producer could run this far ahead if nothing held it.
    const TOTAL: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// A server on a free port with HTTP/3 on; `/big` streams up to [`TOTAL`] bytes and
    /// counts in `produced` what the server has taken from the producer.
    async fn start(
        produced: Arc<AtomicU64>,
    ) -> (
        crate::App,
        SocketAddr,
        rustls::pki_types::CertificateDer<'static>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let config = ServerConfig {
            tls: Some(cello_config::TlsConfig {
                cert_path: cert_path.to_string_lossy().into_owned(),
                key_path: key_path.to_string_lossy().into_owned(),
                ..cello_config::TlsConfig::default()
            }),
            http3: Some(Http3Config::default()),
            ..ServerConfig::default()
        };
        let mut b = Server::builder(config);
        b.route(
            &[http::Method::GET],
            "/big",
            Target::Endpoint(Arc::new(move |_req: RoutedRequest| {
                let produced = produced.clone();
                async move {
                    // One chunk of slack: the producer runs only as far ahead as the server pulls.
                    let (tx, rx) = mpsc::channel(1);
                    tokio::spawn(async move {
                        let chunk = Bytes::from(vec![b'x'; CHUNK]);
                        while produced.load(Ordering::Acquire) < TOTAL {
                            if tx.send(Ok(chunk.clone())).await.is_err() {
                                break;
                            }
                            produced.fetch_add(CHUNK as u64, Ordering::AcqRel);
                        }
                    });
                    Response::new(ResponseBody::Channel(rx))
                }
            })),
        )
        .unwrap();
        let app = b.build().unwrap();
        let listener = crate::Listener::bind_tcp(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = app.clone();
        tokio::spawn(async move {
            serving
                .serve(
                    listener,
                    ServeOptions {
                        drain_timeout: Duration::from_secs(2),
                        signals: false,
                    },
                )
                .await
        });
        (app, addr, cert.der().clone(), dir)
    }

    async fn h3_client(
        addr: SocketAddr,
        ca: rustls::pki_types::CertificateDer<'static>,
    ) -> (quinn::Endpoint, h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client(([127, 0, 0, 1], 0).into()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
        // QUIC binds the TCP listener's port number once serving starts.
        let mut tries = 0;
        let conn = loop {
            match endpoint.connect(addr, "localhost").unwrap().await {
                Ok(c) => break c,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "QUIC not up yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no QUIC connection: {e}"),
            }
        };
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await.unwrap();
        tokio::spawn(async move { futures_util::future::poll_fn(|cx| driver.poll_close(cx)).await });
        (endpoint, send)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_http3_reader_holds_the_response_back_instead_of_the_server_buffering_it() {
        let produced = Arc::new(AtomicU64::new(0));
        let (app, addr, ca, _dir) = start(produced.clone()).await;
        let (endpoint, mut send) = h3_client(addr, ca).await;
        let mut stream = send
            .send_request(
                Request::get(format!("https://localhost:{}/big", addr.port()))
                    .body(())
                    .unwrap(),
            )
            .await
            .unwrap();
        stream.finish().await.unwrap();
        assert_eq!(stream.recv_response().await.unwrap().status(), StatusCode::OK);

        let mut read = 0u64;
        while read < 4 * MIB {
            let chunk = stream.recv_data().await.unwrap().expect("the body ended early");
            read += chunk.remaining() as u64;
        }
        // Stop reading. The server may run ahead by what QUIC flow control lets it send plus
        // its own small buffers, then must wait.
        let mut last = produced.load(Ordering::Acquire);
        let mut stable = 0;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = produced.load(Ordering::Acquire);
            stable = if now == last { stable + 1 } else { 0 };
            last = now;
            if stable >= 10 {
                break;
            }
        }
        assert!(
            stable >= 10,
            "the server kept producing for a reader that stopped ({last} bytes)"
        );
        let ahead = last - read;
        assert!(
            ahead < 16 * MIB,
            "the server took {} MiB beyond what the client read",
            ahead / MIB
        );

        // Reading again lets the stream move on, still in step with the reader.
        while read < 24 * MIB {
            let chunk = stream.recv_data().await.unwrap().expect("the body ended early");
            read += chunk.remaining() as u64;
        }
        let ahead = produced.load(Ordering::Acquire) - read;
        assert!(
            ahead < 16 * MIB,
            "the server ran {} MiB ahead after resuming",
            ahead / MIB
        );
        assert!(produced.load(Ordering::Acquire) < TOTAL);
        drop(stream);
        drop(send);
        endpoint.close(quinn::VarInt::from_u32(0), b"");
        app.stop();
    }
}
