//! A watch on HTTP/1 request framing below hyper, for the one smuggling
//! shape hyper settles silently: a request head with both `Content-Length`
//! and `Transfer-Encoding`.
//!
//! hyper frames such a request by `Transfer-Encoding` alone, drops the
//! `Content-Length` before any code of ours sees the request, and closes the
//! connection afterwards (RFC 9112 §6.1 allows that). That is safe, but
//! the request is still forwarded, and today's edge (nginx ≥ 1.21.1) refuses
//! it with 400. To refuse it too we look at the bytes hyper reads:
//! [`WatchedIo`] passes every byte the client sends through a [`Scanner`]
//! that follows the connection's request heads and body framing (heads parsed
//! with `httparse`, the parser hyper itself uses; bodies skipped by
//! `Content-Length` or chunk sizes), and records in the connection's
//! [`FramingVerdicts`] the index of the first request whose head carried
//! both. The service counts the requests hyper hands it and refuses that one
//! ([`AmbiguousFraming`] in its extensions).
//!
//! The scanner never decides anything on its own: whatever it can't follow
//! (a head hyper will refuse anyway, an HTTP/2 preface, an `Upgrade` or
//! `CONNECT` whose bytes afterwards may be anything) switches it off for the
//! rest of the connection and hyper's own rules apply. It sees bytes before
//! hyper can parse them, so a verdict is always recorded before the request
//! it concerns reaches the service.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most header fields a head may have for the scanner to follow it
/// (hyper refuses more than 100).
const MAX_HEADERS: usize = 128;

/// The longest head the scanner buffers while it arrives in pieces: hyper's
/// own read-buffer bound (8 KiB + 100 × 4 KiB); beyond it hyper gives up too.
const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;

/// Marks a request whose head carried both `Content-Length` and
/// `Transfer-Encoding`; [`Proxy::handle`](crate::proxy::Proxy::handle)
/// answers it 400 and closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// What a connection's [`Scanner`] found, shared with the service that
/// answers the connection's requests in order.
#[derive(Debug)]
pub struct FramingVerdicts {
    /// Index (from 0) of the first request with both framing headers;
    /// `u64::MAX` while there is none.
    ambiguous: AtomicU64,
    /// How many requests the service has been handed so far.
    served: AtomicU64,
}

impl Default for FramingVerdicts {
    fn default() -> Self {
        FramingVerdicts {
            ambiguous: AtomicU64::new(u64::MAX),
            served: AtomicU64::new(0),
        }
    }
}

impl FramingVerdicts {
    /// Called once per request, in the order hyper hands them over: whether
    /// this request is the one the scanner found ambiguous.
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        self.ambiguous.load(Ordering::Acquire) == index
    }

    fn record(&self, index: u64) {
        // Only the first one counts: hyper closes the connection after it.
        let _ =
            self.ambiguous
                .compare_exchange(u64::MAX, index, Ordering::AcqRel, Ordering::Acquire);
    }
}

/// Where the scanner is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting (the rest of) a request head.
    Head,
    /// Inside a `Content-Length` body: this many bytes left.
    Fixed(u64),
    /// Reading a chunk-size line: the size so far and its digit count.
    ChunkSize(u64, u8),
    /// Skipping a chunk extension up to the line's CR.
    ChunkExtension(u64),
    /// After a chunk-size line's CR.
    ChunkSizeLf(u64),
    /// Inside a chunk: this many bytes left.
    ChunkData(u64),
    /// After a chunk's data, expecting its CR.
    ChunkDataCr,
    /// After a chunk's data CR.
    ChunkDataLf,
    /// In the trailer section: whether the current line is still empty.
    Trailer(bool),
    /// After a trailer line's CR: whether the line was empty.
    TrailerLf(bool),
    /// Not following the stream any more (see the module doc).
    Off,
}

/// Follows one connection's request heads and body framing.
#[derive(Debug)]
pub struct Scanner {
    /// Where in the stream the next byte falls.
    state: State,
    /// A head that arrived in pieces, collected until it is complete.
    partial_head: Vec<u8>,
    /// Request heads seen so far.
    requests: u64,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head,
            partial_head: Vec::new(),
            requests: 0,
        }
    }
}

impl Scanner {
    /// Whether the scanner still follows the stream.
    pub fn is_following(&self) -> bool {
        self.state != State::Off
    }

    /// Feeds the next bytes the client sent; returns the index of a request
    /// whose head carried both `Content-Length` and `Transfer-Encoding`.
    pub fn feed(&mut self, mut data: &[u8]) -> Option<u64> {
        while !data.is_empty() {
            match self.state {
                State::Off => return None,
                State::Head => {
                    let (consumed, found) = self.head(data);
                    data = &data[consumed..];
                    if found.is_some() {
                        return found;
                    }
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    self.state = match (self.state, left - n) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), rest) => State::Fixed(rest),
                        (_, 0) => State::ChunkDataCr,
                        (_, rest) => State::ChunkData(rest),
                    };
                }
                _ => {
                    self.state = self.chunk_byte(data[0]);
                    data = &data[1..];
                }
            }
        }
        None
    }

    /// One byte of chunked framing outside chunk data.
    fn chunk_byte(&self, b: u8) -> State {
        match (self.state, b) {
            (State::ChunkSize(size, digits), _) if b.is_ascii_hexdigit() => {
                // 16 hex digits fill a u64; more would overflow (hyper refuses).
                if digits >= 16 {
                    return State::Off;
                }
                let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                State::ChunkSize((size << 4) | digit, digits + 1)
            }
            (State::ChunkSize(size, digits), b'\r') if digits > 0 => State::ChunkSizeLf(size),
            (State::ChunkSize(size, digits), b';' | b' ' | b'\t') if digits > 0 => {
                State::ChunkExtension(size)
            }
            (State::ChunkExtension(size), b'\r') => State::ChunkSizeLf(size),
            (State::ChunkExtension(size), _) => State::ChunkExtension(size),
            (State::ChunkSizeLf(0), b'\n') => State::Trailer(true),
            (State::ChunkSizeLf(size), b'\n') => State::ChunkData(size),
            (State::ChunkDataCr, b'\r') => State::ChunkDataLf,
            (State::ChunkDataLf, b'\n') => State::ChunkSize(0, 0),
            (State::Trailer(empty), b'\r') => State::TrailerLf(empty),
            (State::Trailer(_), _) => State::Trailer(false),
            (State::TrailerLf(true), b'\n') => State::Head,
            (State::TrailerLf(false), b'\n') => State::Trailer(true),
            _ => State::Off,
        }
    }

    /// Parses a request head at the start of `data` (after any earlier
    /// pieces); returns how much of `data` it used and, if the head carried
    /// both framing headers, the request's index.
    fn head(&mut self, data: &[u8]) -> (usize, Option<u64>) {
        let earlier = self.partial_head.len();
        let mut joined = Vec::new();
        let bytes: &[u8] = if earlier == 0 {
            data
        } else {
            joined.reserve(earlier + data.len());
            joined.extend_from_slice(&self.partial_head);
            joined.extend_from_slice(data);
            &joined
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => {
                let framing = Framing::of(&req);
                self.partial_head.clear();
                let index = self.requests;
                self.requests += 1;
                self.state = match framing {
                    Framing::Ambiguous => State::Off,
                    Framing::Unknown => State::Off,
                    Framing::Chunked => State::ChunkSize(0, 0),
                    Framing::Length(0) => State::Head,
                    Framing::Length(n) => State::Fixed(n),
                };
                let found = (framing == Framing::Ambiguous).then_some(index);
                (len.saturating_sub(earlier), found)
            }
            Ok(httparse::Status::Partial) if bytes.len() <= MAX_HEAD_BYTES => {
                self.partial_head.extend_from_slice(data);
                (data.len(), None)
            }
            _ => {
                self.partial_head = Vec::new();
                self.state = State::Off;
                (data.len(), None)
            }
        }
    }
}

/// How a request head frames its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Both `Content-Length` and `Transfer-Encoding`.
    Ambiguous,
    /// Chunked.
    Chunked,
    /// A fixed length (0 when neither header is there).
    Length(u64),
    /// Something the scanner won't follow: an invalid or conflicting
    /// length, a final coding other than chunked, an upgrade or CONNECT.
    Unknown,
}

impl Framing {
    fn of(req: &httparse::Request<'_, '_>) -> Framing {
        let mut length: Option<u64> = None;
        let mut has_length = false;
        let mut has_te = false;
        let mut chunked_last = false;
        let mut upgrade = req.method == Some("CONNECT");
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                has_length = true;
                let n = std::str::from_utf8(h.value)
                    .ok()
                    .map(str::trim)
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<u64>().ok());
                match (n, length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    // Invalid or differing: hyper refuses it, unless
                    // Transfer-Encoding is there too (then it's ambiguous).
                    _ => length = Some(u64::MAX),
                }
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                has_te = true;
                chunked_last = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.rsplit(',').next())
                    .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        match (has_length, has_te, length) {
            (true, true, _) => Framing::Ambiguous,
            _ if upgrade => Framing::Unknown,
            (_, true, _) if chunked_last => Framing::Chunked,
            (_, true, _) => Framing::Unknown,
            (_, _, Some(u64::MAX)) => Framing::Unknown,
            (_, _, n) => Framing::Length(n.unwrap_or(0)),
        }
    }
}

/// A client connection whose incoming bytes pass through a [`Scanner`]
/// on their way to hyper; writes go straight through.
#[derive(Debug)]
pub struct WatchedIo<S> {
    /// The connection (TCP, or TLS after decryption).
    inner: S,
    /// Follows the request stream.
    scanner: Scanner,
    /// Shared with the connection's service.
    verdicts: Arc<FramingVerdicts>,
}

impl<S> WatchedIo<S> {
    /// Watches `inner`, reporting to `verdicts`.
    pub fn new(inner: S, verdicts: Arc<FramingVerdicts>) -> Self {
        WatchedIo {
            inner,
            scanner: Scanner::default(),
            verdicts,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.scanner.is_following()
            && let Some(index) = this.scanner.feed(&buf.filled()[before..])
        {
            this.verdicts.record(index);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Feeds `stream` in pieces of `step` bytes; the ambiguous index found.
    fn scan(stream: &str, step: usize) -> (Option<u64>, Scanner) {
        let mut s = Scanner::default();
        let mut found = None;
        for piece in stream.as_bytes().chunks(step) {
            if let Some(i) = s.feed(piece) {
                found.get_or_insert(i);
            }
        }
        (found, s)
    }

    fn all_steps(stream: &str) -> Vec<(Option<u64>, Scanner)> {
        (1..=stream.len()).map(|step| scan(stream, step)).collect()
    }

    #[test]
    fn both_headers_are_found_at_their_request_whatever_the_read_sizes() {
        let stream = "GET / HTTP/1.1\r\nHost: a\r\n\r\n\
             POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world\
             POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n\
             POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for (found, s) in all_steps(stream) {
            assert_eq!(found, Some(3));
            assert!(!s.is_following());
        }
        // Header order and case don't matter.
        let (found, _) = scan(
            "POST / HTTP/1.1\r\ntransfer-encoding: gzip, chunked\r\nCONTENT-LENGTH: 4\r\n\r\n",
            7,
        );
        assert_eq!(found, Some(0));
    }

    #[test]
    fn well_framed_streams_are_followed_without_a_verdict() {
        let stream = "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n\
             GET /c HTTP/1.1\r\nHost: a\r\n\r\n";
        for (found, s) in all_steps(stream) {
            assert_eq!(found, None);
            assert!(s.is_following());
            assert_eq!(s.requests, 3);
            assert_eq!(s.state, State::Head);
        }
    }

    #[test]
    fn body_bytes_are_never_read_as_heads() {
        let body = "GET /inner HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let stream = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}GET /next HTTP/1.1\r\n\r\n",
            body.len()
        );
        for (found, s) in all_steps(&stream) {
            assert_eq!(found, None);
            assert_eq!(s.requests, 2);
        }
        let chunked = format!(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        for (found, s) in all_steps(&chunked) {
            assert_eq!(found, None);
            assert_eq!(s.requests, 1);
            assert!(s.is_following());
        }
    }

    #[test]
    fn what_it_cannot_follow_switches_it_off() {
        for stream in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "\x16\x03\x01garbage",
        ] {
            let (found, s) = scan(stream, 3);
            assert_eq!(found, None, "{stream:?}");
            assert!(!s.is_following(), "{stream:?}");
        }
    }

    #[test]
    fn verdicts_name_the_request_in_service_order() {
        let v = FramingVerdicts::default();
        v.record(1);
        v.record(2);
        assert!(!v.next_is_ambiguous());
        assert!(v.next_is_ambiguous());
        assert!(!v.next_is_ambiguous());
    }
}
