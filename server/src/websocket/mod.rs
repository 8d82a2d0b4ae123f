//! WebSocket (RFC 6455) over an HTTP/1.1 upgrade, with tokio-tungstenite.
//!
//! A `Target::WebSocket` route checks the handshake ([`Handshake::from_parts`]) and hands the
//! request to its endpoint with the [`Handshake`] in the extensions. The endpoint decides:
//! [`Handshake::accept`] gives the `101` response and a [`Session`], which (once hyper has
//! switched protocols) pumps frames between the socket and two bounded channels. Bounded
//! both ways: a handler that does not read stops the server reading the socket (TCP pushes
//! back on the client), and a client that does not read makes the handler's `send` wait.
//! With `websocket.perMessageDeflate`, a client's permessage-deflate offer is taken up and
//! [`deflate::DeflateStream`] compresses under tungstenite (which has no extensions).

pub mod deflate;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig as WireConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use self::deflate::{DeflateParams, DeflateStream};
use crate::body::ResponseBody;
use crate::problem::problem;
use crate::serve::ConnLease;
use crate::service::ConnInfo;
use cello_config::WebSocketConfig;

/// A message between a session and its handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsMessage {
    /// A text message.
    Text(String),
    /// A binary message.
    Binary(Bytes),
    /// A close: `(code, reason)`; `None` code means "no status" (1005).
    Close(Option<u16>, String),
}

/// Close codes the server sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The server is going away (drain, idle timeout).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Invalid UTF-8 in a text message.
    pub const INVALID_DATA: u16 = 1007;
    /// Message bigger than `websocket.maxMessageSize`.
    pub const TOO_BIG: u16 = 1009;
    /// The handler failed.
    pub const INTERNAL: u16 = 1011;
    /// The connection dropped without a close frame (never sent on the wire).
    pub const ABNORMAL: u16 = 1006;
}

/// The request extension a WebSocket endpoint finds its [`Handshake`] in (extensions must be
/// `Clone`; the handshake is taken once).
#[derive(Clone)]
pub struct PendingHandshake(Arc<std::sync::Mutex<Option<Handshake>>>);

impl PendingHandshake {
    /// Wrap a checked handshake.
    pub fn new(hs: Handshake) -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(hs))))
    }

    /// Take the handshake (`None` when already taken).
    pub fn take(&self) -> Option<Handshake> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// A valid upgrade request, waiting for the endpoint's decision.
pub struct Handshake {
    accept_key: String,
    protocols: Vec<String>,
    on_upgrade: hyper::upgrade::OnUpgrade,
    lease: Option<Arc<ConnLease>>,
    conn: Option<ConnInfo>,
    config: WebSocketConfig,
    deflate: Option<DeflateParams>,
}

fn has_token(headers: &http::HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// The request asks for a WebSocket upgrade (`Upgrade: websocket`): the router sends it to the
/// path's WebSocket route rather than its plain GET route.
pub fn wants_upgrade(headers: &http::HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

fn upgrade_required(detail: &str) -> Response<ResponseBody> {
    let mut resp = problem(StatusCode::UPGRADE_REQUIRED, detail);
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    resp.headers_mut()
        .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    resp
}

impl Handshake {
    /// Check the upgrade request (RFC 6455 §4.2.1) and take what the session needs from its
    /// extensions. A plain request is 426, a malformed handshake 400.
    // The refusal is the response itself, returned as is: boxing it would only add an allocation.
    #[allow(clippy::result_large_err)]
    pub fn from_parts(
        parts: &mut http::request::Parts,
        config: &WebSocketConfig,
    ) -> Result<Self, Response<ResponseBody>> {
        let h = &parts.headers;
        if !has_token(h, header::UPGRADE, "websocket") {
            return Err(upgrade_required(
                "this route speaks WebSocket: send an Upgrade: websocket request",
            ));
        }
        if parts.version != http::Version::HTTP_11 {
            return Err(upgrade_required(
                "WebSocket needs HTTP/1.1 (RFC 8441 over HTTP/2 is not supported)",
            ));
        }
        if parts.method != http::Method::GET {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "a WebSocket handshake is a GET request",
            ));
        }
        if !has_token(h, header::CONNECTION, "upgrade") {
            return Err(problem(
                StatusCode::BAD_REQUEST,
                "a WebSocket handshake needs `Connection: Upgrade`",
            ));
        }
        if h.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return Err(upgrade_required("only WebSocket version 13 is supported"));
        }
        let key = match h.get(header::SEC_WEBSOCKET_KEY) {
            // 16 random bytes, base64: always 24 characters.
            Some(k) if k.len() == 24 => k.as_bytes().to_vec(),
            _ => return Err(problem(StatusCode::BAD_REQUEST, "missing or invalid Sec-WebSocket-Key")),
        };
        let protocols = h
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let Some(on_upgrade) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return Err(upgrade_required("WebSocket needs a real HTTP/1.1 connection"));
        };
        let conn = parts.extensions.get::<ConnInfo>();
        let lease = conn.and_then(|c| c.hold.as_ref()).and_then(|h| h.0.upgrade());
        let deflate = if config.per_message_deflate {
            deflate::negotiate(h)
        } else {
            None
        };
        Ok(Self {
            accept_key: tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
            protocols,
            on_upgrade,
            lease,
            conn: conn.cloned(),
            config: config.clone(),
            deflate,
        })
    }

    /// The subprotocols the client offered, in its order of preference.
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// The settings the session will use.
    pub fn config(&self) -> &WebSocketConfig {
        &self.config
    }

    /// Accept with `protocol` (one the client offered) and extra response headers: the
    /// `101 Switching Protocols` response to return, and the session to run.
    pub fn accept(self, protocol: Option<&str>, headers: &[(String, String)]) -> (Response<ResponseBody>, Session) {
        let mut resp = Response::new(ResponseBody::Empty);
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let h = resp.headers_mut();
        for (k, v) in headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v.as_str())) {
                h.append(k, v);
            }
        }
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        if let Ok(v) = HeaderValue::try_from(self.accept_key.as_str()) {
            h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
        }
        if let Some(p) = protocol.and_then(|p| HeaderValue::try_from(p).ok()) {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
        }
        if let Some(v) = self.deflate.and_then(|d| HeaderValue::try_from(d.response()).ok()) {
            h.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
        }
        let session = Session {
            on_upgrade: self.on_upgrade,
            lease: self.lease,
            _conn: self.conn,
            config: self.config,
            deflate: self.deflate,
        };
        (resp, session)
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// A close handshake happened (either side started it).
    Closed,
    /// The peer vanished (reset, EOF without a close frame, write timeout) or the upgrade failed.
    Abnormal,
}

/// An accepted WebSocket connection, before and while it runs.
pub struct Session {
    on_upgrade: hyper::upgrade::OnUpgrade,
    // Held for the session's life: the connection slot, the drain signal, the open-connections gauge.
    lease: Option<Arc<ConnLease>>,
    _conn: Option<ConnInfo>,
    config: WebSocketConfig,
    deflate: Option<DeflateParams>,
}

fn secs(s: f64) -> Option<Duration> {
    (s > 0.0).then(|| Duration::from_secs_f64(s))
}

fn close_frame(code: u16, reason: &str) -> Message {
    // A close reason is at most 123 bytes (RFC 6455 §5.5); cut on a char boundary.
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason[..end].to_owned().into(),
    }))
}

impl Session {
    /// Pump frames until the connection ends: incoming messages go to `incoming` (a full
    /// channel stops reading), `outgoing` messages are written (a `Close` starts the close
    /// handshake). Pings every `pingInterval`, closes with 1001 after `idleTimeout` without a
    /// frame from the peer or when the server drains, 1009 for an oversized message.
    pub async fn run(self, incoming: mpsc::Sender<WsMessage>, outgoing: mpsc::Receiver<WsMessage>) -> SessionEnd {
        let Ok(upgraded) = self.on_upgrade.await else {
            return SessionEnd::Abnormal;
        };
        let max = usize::try_from(self.config.max_message_size).unwrap_or(usize::MAX);
        let wire = WireConfig::default()
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let shutdown = self.lease.as_ref().map(|l| l.shutdown.clone()).unwrap_or_default();
        let io = TokioIo::new(upgraded);
        match self.deflate {
            Some(params) => {
                let io = DeflateStream::new(io, params, max);
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(wire)).await;
                pump(ws, &self.config, shutdown, incoming, outgoing).await
            }
            None => {
                let ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(wire)).await;
                pump(ws, &self.config, shutdown, incoming, outgoing).await
            }
        }
    }
}

/// The session's loop over `ws` (see [`Session::run`]).
async fn pump<S>(
    ws: WebSocketStream<S>,
    config: &WebSocketConfig,
    shutdown: tokio_util::sync::CancellationToken,
    incoming: mpsc::Sender<WsMessage>,
    mut outgoing: mpsc::Receiver<WsMessage>,
) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let ping_every = secs(config.ping_interval);
    let idle_after = secs(config.idle_timeout);
    let far = Duration::from_secs(86_400 * 365);
    let mut ping = tokio::time::interval(ping_every.unwrap_or(far));
    ping.reset(); // the first tick is one interval from now, not immediate
    let idle = tokio::time::sleep(idle_after.unwrap_or(far));
    tokio::pin!(idle);
    // `closing`: we sent a close frame, so we only wait (bounded) for the peer's answer.
    let (mut closing, mut got_close, mut handler_done) = (false, false, false);
    let close_wait = Duration::from_secs(5);
    // Room reserved in `incoming` for the next message: reading waits for it.
    let mut permit: Option<mpsc::OwnedPermit<WsMessage>> = None;
    let end = loop {
        let mut start_close = None;
        tokio::select! {
            biased;
            () = shutdown.cancelled(), if !closing => start_close = Some((close::GOING_AWAY, "server shutting down")),
            out = outgoing.recv(), if !handler_done => match out {
                Some(msg) => {
                    let was_closing = closing;
                    if let Some(end) = write(&mut sink, msg, &mut closing).await {
                        break end;
                    }
                    if closing && !was_closing {
                        idle.as_mut().reset(tokio::time::Instant::now() + close_wait);
                    }
                }
                None => {
                    // The handler let go of the connection without closing it.
                    handler_done = true;
                    start_close = Some((close::NORMAL, ""));
                }
            },
            _ = ping.tick(), if ping_every.is_some() && !closing => {
                if sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break SessionEnd::Abnormal;
                }
            }
            () = &mut idle => {
                if closing {
                    break SessionEnd::Closed; // the peer never answered our close
                }
                start_close = Some((close::GOING_AWAY, "idle timeout"));
            }
            p = incoming.clone().reserve_owned(), if permit.is_none() && !got_close => match p {
                Ok(p) => permit = Some(p),
                Err(_) => {
                    // Nobody reads any more: drop what arrives, but keep answering frames.
                    got_close = true;
                    start_close = Some((close::NORMAL, ""));
                }
            },
            next = stream.next(), if permit.is_some() || got_close => {
                if !closing {
                    if let Some(after) = idle_after {
                        idle.as_mut().reset(tokio::time::Instant::now() + after);
                    }
                }
                let deliver = |permit: &mut Option<mpsc::OwnedPermit<WsMessage>>, m: WsMessage| {
                    if let Some(p) = permit.take() {
                        p.send(m);
                    }
                };
                match next {
                    Some(Ok(Message::Text(t))) => deliver(&mut permit, WsMessage::Text(t.as_str().to_owned())),
                    Some(Ok(Message::Binary(b))) => deliver(&mut permit, WsMessage::Binary(b)),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((None, String::new()), |f| {
                            (Some(u16::from(f.code)), f.reason.as_str().to_owned())
                        });
                        if !got_close {
                            deliver(&mut permit, WsMessage::Close(code, reason));
                        }
                        got_close = true;
                        // tungstenite queued the reply (echoing the code); send it now.
                        let _ = sink.flush().await;
                        if closing {
                            break SessionEnd::Closed;
                        }
                        closing = true;
                        idle.as_mut().reset(tokio::time::Instant::now() + close_wait);
                    }
                    Some(Ok(_)) => {} // ping (answered by tungstenite), pong, raw frame
                    Some(Err(e)) => {
                        let code = match &e {
                            WsError::Capacity(_) => Some((close::TOO_BIG, "message too big")),
                            WsError::Protocol(_) => Some((close::PROTOCOL, "protocol error")),
                            WsError::Utf8(_) => Some((close::INVALID_DATA, "invalid UTF-8")),
                            _ => None,
                        };
                        if let Some((code, reason)) = code {
                            if !closing {
                                let _ = sink.send(close_frame(code, reason)).await;
                            }
                            deliver(&mut permit, WsMessage::Close(Some(code), reason.to_owned()));
                            break SessionEnd::Closed;
                        }
                        break if closing && matches!(e, WsError::ConnectionClosed) {
                            SessionEnd::Closed
                        } else {
                            SessionEnd::Abnormal
                        };
                    }
                    None => break if closing { SessionEnd::Closed } else { SessionEnd::Abnormal },
                }
            }
        }
        if let Some((code, reason)) = start_close {
            if !closing {
                closing = true;
                let _ = sink.send(close_frame(code, reason)).await;
                idle.as_mut().reset(tokio::time::Instant::now() + close_wait);
            }
        }
    };
    drop(permit);
    if end == SessionEnd::Abnormal {
        let _ = incoming.try_send(WsMessage::Close(Some(close::ABNORMAL), String::new()));
    }
    // Close the TCP side; errors here mean it is closed already.
    let _ = sink.close().await;
    end
}

/// Write one message from the handler; `Some(end)` when the connection is finished.
async fn write<S>(sink: &mut S, msg: WsMessage, closing: &mut bool) -> Option<SessionEnd>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    if *closing {
        return None; // after our close frame nothing else may be sent (RFC 6455 §5.5.1)
    }
    let frame = match msg {
        WsMessage::Text(t) => Message::Text(t.into()),
        WsMessage::Binary(b) => Message::Binary(b),
        WsMessage::Close(code, reason) => {
            *closing = true;
            code.map_or(Message::Close(None), |c| close_frame(c, &reason))
        }
    };
    match sink.send(frame).await {
        Ok(()) => None,
        Err(_) => Some(SessionEnd::Abnormal),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::RoutedRequest;
    use crate::{ServeOptions, Server, Target};
    use cello_config::ServerConfig;

    /// A Rust echo endpoint: accepts and echoes through the session's channels.
    fn echo_app(config: ServerConfig) -> crate::App {
        let mut b = Server::builder(config);
        b.route(
            &[http::Method::GET],
            "/ws",
            Target::WebSocket(Arc::new(|mut req: RoutedRequest| async move {
                let hs = req
                    .parts
                    .extensions
                    .remove::<PendingHandshake>()
                    .and_then(|p| p.take())
                    .unwrap();
                let (resp, session) = hs.accept(None, &[]);
                let (in_tx, mut in_rx) = mpsc::channel(4);
                let (out_tx, out_rx) = mpsc::channel(4);
                tokio::spawn(session.run(in_tx, out_rx));
                tokio::spawn(async move {
                    while let Some(m) = in_rx.recv().await {
                        if matches!(m, WsMessage::Close(..)) || out_tx.send(m).await.is_err() {
                            break;
                        }
                    }
                });
                resp
            })),
        )
        .unwrap();
        b.build().unwrap()
    }

    async fn start(config: ServerConfig) -> (crate::App, std::net::SocketAddr) {
        let app = echo_app(config);
        let listener = crate::Listener::bind_tcp(([127, 0, 0, 1], 0).into()).unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = app.clone();
        tokio::spawn(async move {
            serving
                .serve(
                    listener,
                    ServeOptions {
                        drain_timeout: Duration::from_secs(5),
                        signals: false,
                    },
                )
                .await
        });
        (app, addr)
    }

    async fn client(addr: std::net::SocketAddr) -> WebSocketStream<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let cfg = WireConfig::default().max_message_size(None).max_frame_size(None);
        tokio_tungstenite::client_async_with_config(format!("ws://{addr}/ws"), tcp, Some(cfg))
            .await
            .unwrap()
            .0
    }

    #[tokio::test]
    async fn echo_then_1009_for_an_oversized_message_then_1001_on_drain() {
        let mut config = ServerConfig::default();
        config.websocket.max_message_size = 1000;
        let (app, addr) = start(config).await;

        let mut ws = client(addr).await;
        ws.send(Message::text("hi")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hi"));
        ws.send(Message::binary(vec![7u8; 2000])).await.unwrap();
        match ws.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), close::TOO_BIG),
            other => panic!("expected a 1009 close, got {other:?}"),
        }

        let mut ws = client(addr).await;
        ws.send(Message::text("again")).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("again"));
        app.stop();
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Close(Some(f)) => assert_eq!(u16::from(f.code), close::GOING_AWAY),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }

    #[test]
    fn close_reasons_are_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        match close_frame(1000, &long) {
            Message::Close(Some(f)) => assert!(f.reason.len() <= 123 && f.reason.as_str().chars().all(|c| c == 'é')),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn tokens_are_matched_case_insensitively() {
        let mut h = http::HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(has_token(&h, header::CONNECTION, "upgrade"));
        assert!(!has_token(&h, header::UPGRADE, "websocket"));
    }
}
