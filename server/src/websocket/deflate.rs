//! permessage-deflate (RFC 7692) under tungstenite, which knows no extensions.
//!
//! [`negotiate`] picks the first offer in `Sec-WebSocket-Extensions` the server can honour.
//! [`DeflateStream`] then sits between the socket and tungstenite as a byte stream that
//! rewrites frames: compressed messages from the client (RSV1) are inflated into plain frames
//! before tungstenite parses them, and the data frames tungstenite writes are compressed on
//! their way out. Control frames and uncompressed messages pass through untouched, so
//! tungstenite keeps doing all of RFC 6455 (fragmentation, UTF-8, close handshake, limits).
//!
//! Inflating is lazy, one chunk of output at a time, each handed to tungstenite as a fragment:
//! its message size limit sees the inflated size as it grows, so a small "deflate bomb" is
//! cut off with 1009 after one chunk instead of being inflated in memory. Anything we cannot
//! make sense of (a bad deflate stream, RSV1 where it has no meaning) is handed to tungstenite
//! as a frame it refuses, which fails the connection with 1002 as RFC 7692 asks.

use std::io::{self, Cursor};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use http::header::SEC_WEBSOCKET_EXTENSIONS;
use http::HeaderMap;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;

/// Inflated bytes handed to tungstenite per frame; also how much compressed output waits
/// for the socket before a write pushes back.
const CHUNK: usize = 64 * 1024;
/// The end of a sync flush, taken off each compressed message and put back before inflating
/// (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0, 0, 0xff, 0xff];
/// Smallest window zlib can compress raw deflate with (it turns 8 into 9).
const MIN_WINDOW_BITS: u8 = 9;

/// What the server agreed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compressor after each message (the client asked for it).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message, so the server may too.
    pub client_no_context_takeover: bool,
    /// The server's compression window, as the client limited it (15: 32 KiB).
    pub server_max_window_bits: u8,
    /// The client limited the window explicitly (the answer must then name it).
    server_window_asked: bool,
}

impl DeflateParams {
    /// The `Sec-WebSocket-Extensions` value of the `101` response.
    pub fn response(&self) -> String {
        let mut s = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if self.server_window_asked {
            s.push_str(&format!("; server_max_window_bits={}", self.server_max_window_bits));
        }
        s
    }
}

/// The first `permessage-deflate` offer of the request the server can honour; `None` when
/// there is none (the connection then runs uncompressed, which every client must accept).
pub fn negotiate(headers: &HeaderMap) -> Option<DeflateParams> {
    headers
        .get_all(SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|offer| {
            let mut parts = offer.split(';').map(str::trim);
            let name = parts.next()?;
            if name.eq_ignore_ascii_case("permessage-deflate") {
                parse_offer(parts)
            } else {
                None
            }
        })
}

fn window_bits(v: &str) -> Option<u8> {
    // A value may be a quoted string (RFC 7692 §7.1.2.1); it must be 8..=15 without leading zeros.
    let v = v.trim().trim_matches('"');
    if v.starts_with('0') {
        return None;
    }
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// One offer's parameters; `None` declines it (unknown or repeated parameter, bad value, or
/// a window the compressor cannot keep to).
fn parse_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<DeflateParams> {
    let mut p = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        server_window_asked: false,
    };
    let mut seen = [false; 4];
    for param in params {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v)),
            None => (param, None),
        };
        let i = match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover", None) => {
                p.server_no_context_takeover = true;
                0
            }
            ("client_no_context_takeover", None) => {
                p.client_no_context_takeover = true;
                1
            }
            ("server_max_window_bits", Some(v)) => {
                let bits = window_bits(v)?;
                if bits < MIN_WINDOW_BITS {
                    return None;
                }
                p.server_max_window_bits = bits;
                p.server_window_asked = true;
                2
            }
            // The client may use a smaller window; inflating with 32 KiB reads any of them.
            ("client_max_window_bits", None) => 3,
            ("client_max_window_bits", Some(v)) => {
                window_bits(v)?;
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(p)
}

/// A compressed message from the client, being inflated.
struct Inflating {
    /// Unmasked compressed bytes still to inflate (with [`TAIL`] when the frame ends the message).
    input: Bytes,
    /// Opcode of the next frame handed on (`Continue` after the first).
    opcode: OpCode,
    /// The input ends the message.
    last: bool,
}

/// The socket with permessage-deflate applied (see the module docs). Server side only.
pub struct DeflateStream<S> {
    inner: S,
    params: DeflateParams,
    /// Compressed frames bigger than this pass through as they are, for tungstenite to refuse.
    max_frame: usize,
    /// From the socket, not yet a whole frame.
    raw_in: BytesMut,
    /// Plain frames for tungstenite.
    plain_in: BytesMut,
    inflate: Decompress,
    inflating: Option<Inflating>,
    /// A fragmented data message is under way: `Some(compressed)`.
    in_message: Option<bool>,
    /// Past something tungstenite must fail the connection on: bytes pass through unchanged.
    passthrough: bool,
    /// The socket reached EOF.
    eof: bool,
    /// From tungstenite, not yet a whole frame.
    plain_out: BytesMut,
    /// Frames for the socket.
    raw_out: BytesMut,
    deflate: Compress,
}

impl<S> DeflateStream<S> {
    /// Wrap the upgraded socket of a connection that agreed to `params`.
    pub fn new(inner: S, params: DeflateParams, max_frame: usize) -> Self {
        Self {
            inner,
            params,
            max_frame,
            raw_in: BytesMut::new(),
            plain_in: BytesMut::new(),
            inflate: Decompress::new(false),
            inflating: None,
            in_message: None,
            passthrough: false,
            eof: false,
            plain_out: BytesMut::new(),
            raw_out: BytesMut::new(),
            deflate: Compress::new_with_window_bits(Compression::default(), false, params.server_max_window_bits),
        }
    }

    /// Hand tungstenite a frame it refuses (RSV2 means nothing here): it fails the connection
    /// with 1002. Everything after passes through as is.
    fn fail(&mut self) {
        self.inflating = None;
        self.passthrough = true;
        let header = FrameHeader {
            rsv2: true,
            opcode: OpCode::Data(Data::Binary),
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        put_header(&mut self.plain_in, &header, 0);
    }

    /// Take the next whole frame off `raw_in`; `false` when more bytes are needed.
    fn next_frame(&mut self) -> bool {
        if self.raw_in.is_empty() {
            return false;
        }
        if self.passthrough {
            let rest = self.raw_in.split();
            self.plain_in.extend_from_slice(&rest);
            return true;
        }
        let mut cur = Cursor::new(&self.raw_in[..]);
        let (header, len) = match FrameHeader::parse(&mut cur) {
            Ok(Some(h)) => h,
            Ok(None) => return false,
            Err(_) => {
                // A header tungstenite will refuse as well.
                self.passthrough = true;
                return true;
            }
        };
        let head_len = usize::try_from(cur.position()).unwrap_or(usize::MAX);
        let Some(len) = usize::try_from(len).ok().filter(|n| *n <= self.max_frame) else {
            // Over the frame limit: tungstenite answers 1009 from the header alone.
            self.passthrough = true;
            return true;
        };
        let compressed = match (header.opcode, self.in_message) {
            _ if header.rsv2 || header.rsv3 => {
                self.passthrough = true;
                return true;
            }
            (OpCode::Control(_), _) => false,
            (OpCode::Data(Data::Continue), Some(c)) if !header.rsv1 => c,
            (OpCode::Data(Data::Text | Data::Binary), None) => header.rsv1,
            // RSV1 on a continuation, or fragments out of order: tungstenite fails it.
            _ => {
                self.passthrough = true;
                return true;
            }
        };
        if self.raw_in.len() < head_len + len {
            self.raw_in.reserve(head_len + len - self.raw_in.len());
            return false;
        }
        let mut frame = self.raw_in.split_to(head_len + len);
        if let OpCode::Data(_) = header.opcode {
            self.in_message = (!header.is_final).then_some(compressed);
        }
        if !compressed {
            self.plain_in.extend_from_slice(&frame);
            return true;
        }
        let Some(mask) = header.mask else {
            // An unmasked client frame: tungstenite refuses it (RSV1 and all).
            self.plain_in.extend_from_slice(&frame);
            self.passthrough = true;
            return true;
        };
        let mut payload = frame.split_off(head_len);
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i & 3];
        }
        if header.is_final {
            payload.extend_from_slice(&TAIL);
        }
        self.inflating = Some(Inflating {
            input: payload.freeze(),
            opcode: header.opcode,
            last: header.is_final,
        });
        true
    }

    /// Inflate one chunk of the current message into a plain frame.
    fn inflate_step(&mut self) {
        let Some(job) = self.inflating.as_mut() else { return };
        let mut out = Vec::with_capacity(CHUNK);
        let before = self.inflate.total_in();
        let res = self.inflate.decompress_vec(&job.input, &mut out, FlushDecompress::Sync);
        let used = usize::try_from(self.inflate.total_in() - before).unwrap_or(usize::MAX);
        if res.is_err() || (used == 0 && out.is_empty() && !job.input.is_empty()) {
            return self.fail(); // not a deflate stream, or one that cannot go on
        }
        job.input.advance(used.min(job.input.len()));
        // Output room left over means the inflater has nothing more for this input.
        let done = job.input.is_empty() && out.len() < CHUNK;
        let header = FrameHeader {
            is_final: done && job.last,
            opcode: job.opcode,
            // Clients mask; a zero mask leaves the inflated bytes as they are.
            mask: Some([0; 4]),
            ..FrameHeader::default()
        };
        job.opcode = OpCode::Data(Data::Continue);
        if done {
            if job.last && self.params.client_no_context_takeover {
                self.inflate.reset(false);
            }
            self.inflating = None;
        }
        put_header(&mut self.plain_in, &header, out.len());
        self.plain_in.extend_from_slice(&out);
    }

    /// Compress the whole frames tungstenite has written so far into `raw_out`.
    fn compress_frames(&mut self) -> io::Result<()> {
        loop {
            let mut cur = Cursor::new(&self.plain_out[..]);
            let Ok(Some((header, len))) = FrameHeader::parse(&mut cur) else {
                return Ok(());
            };
            let head_len = usize::try_from(cur.position()).unwrap_or(usize::MAX);
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            if self.plain_out.len() < head_len.saturating_add(len) {
                return Ok(());
            }
            let frame = self.plain_out.split_to(head_len + len);
            let OpCode::Data(kind) = header.opcode else {
                self.raw_out.extend_from_slice(&frame);
                continue;
            };
            let mut out = Vec::with_capacity(len / 2 + 64);
            let mut input = &frame[head_len..];
            // Nothing to compress: zlib answers a second flush in a row with Z_BUF_ERROR, and
            // the message after that came out undecodable. The stream is on a byte boundary
            // after the last flush, so a lone 0x00 (with the tail the peer adds back, an empty
            // stored block) stands for the empty message (RFC 7692 §7.2.3.6).
            if input.is_empty() {
                if header.is_final {
                    out.push(0);
                }
            } else {
                loop {
                    if out.capacity() - out.len() < 64 {
                        out.reserve(out.capacity().max(1024));
                    }
                    let before = self.deflate.total_in();
                    self.deflate
                        .compress_vec(input, &mut out, FlushCompress::Sync)
                        .map_err(io::Error::other)?;
                    let used = usize::try_from(self.deflate.total_in() - before).unwrap_or(usize::MAX);
                    input = &input[used.min(input.len())..];
                    // All input taken and room left over: the flush is complete.
                    if input.is_empty() && out.len() < out.capacity() {
                        break;
                    }
                }
            }
            if header.is_final {
                if out.ends_with(&TAIL) {
                    out.truncate(out.len() - TAIL.len());
                }
                if self.params.server_no_context_takeover {
                    self.deflate.reset();
                }
            }
            let header = FrameHeader {
                is_final: header.is_final,
                // RSV1 marks the first frame of a compressed message only.
                rsv1: kind != Data::Continue,
                opcode: header.opcode,
                mask: None,
                ..FrameHeader::default()
            };
            put_header(&mut self.raw_out, &header, out.len());
            self.raw_out.extend_from_slice(&out);
        }
    }
}

fn put_header(buf: &mut BytesMut, header: &FrameHeader, len: usize) {
    // Writing into memory cannot fail.
    let _ = header.format(len as u64, &mut buf.writer());
}

impl<S: AsyncWrite + Unpin> DeflateStream<S> {
    /// Write `raw_out` to the socket.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.raw_out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.raw_out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.raw_out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for DeflateStream<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plain_in.is_empty() {
                let n = buf.remaining().min(this.plain_in.len());
                buf.put_slice(&this.plain_in[..n]);
                this.plain_in.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.inflating.is_some() {
                this.inflate_step();
                continue;
            }
            if this.next_frame() {
                continue;
            }
            if this.eof {
                // A cut-off frame goes to tungstenite as it is, then the EOF.
                if !this.raw_in.is_empty() {
                    let rest = this.raw_in.split();
                    this.plain_in.extend_from_slice(&rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            if this.raw_in.capacity() - this.raw_in.len() < 4096 {
                this.raw_in.reserve(CHUNK);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.inner),
                cx,
                &mut this.raw_in
            ))?;
            if n == 0 {
                this.eof = true;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for DeflateStream<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Back-pressure: past one chunk of compressed bytes, wait for the socket.
        if this.raw_out.len() >= CHUNK {
            ready!(this.poll_drain(cx))?;
        }
        this.plain_out.extend_from_slice(data);
        this.compress_frames()?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn offer(v: &str) -> Option<DeflateParams> {
        let mut h = HeaderMap::new();
        h.insert(SEC_WEBSOCKET_EXTENSIONS, HeaderValue::from_str(v).unwrap());
        negotiate(&h)
    }

    #[test]
    fn offers_are_accepted_declined_or_skipped_to_the_next() {
        let p = offer("permessage-deflate; client_max_window_bits").unwrap();
        assert_eq!(p.response(), "permessage-deflate");
        let p = offer("permessage-deflate; server_no_context_takeover; client_no_context_takeover").unwrap();
        assert_eq!(
            p.response(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
        let p = offer("permessage-deflate; server_max_window_bits=\"10\"").unwrap();
        assert_eq!(
            (p.server_max_window_bits, p.response().as_str()),
            (10, "permessage-deflate; server_max_window_bits=10")
        );
        // Declined: a window zlib cannot keep to, bad values, unknown or repeated parameters.
        for bad in [
            "permessage-deflate; server_max_window_bits=8",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=07",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
        // The first acceptable offer wins.
        let p = offer("permessage-deflate; server_max_window_bits=8, permessage-deflate; client_no_context_takeover")
            .unwrap();
        assert!(p.client_no_context_takeover);
    }
}
