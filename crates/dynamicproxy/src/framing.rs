//! A watch on HTTP/1 request heads and framing below hyper: it bounds a
//! request head's size and the time a connection may take to send one, and
//! it catches the one smuggling shape hyper settles silently, a request head
//! with both `Content-Length` and `Transfer-Encoding`.
//!
//! [`WatchedIo`] passes every byte the client sends through a [`Scanner`]
//! that follows the connection's request heads and body framing (bodies
//! skipped by `Content-Length` or chunk sizes). The scanner looks at each
//! byte once: it finds a head's end by counting line lengths, and only then
//! parses the complete head with `httparse` (the parser hyper itself uses),
//! so a head trickled in byte by byte costs no more than one sent at once.
//!
//! * **Heads are handed to hyper whole.** Until a head is complete its bytes
//!   stay in [`WatchedIo`] (at most `server.max_head_bytes`), so hyper never
//!   holds a partial head. A head that grows past the limit — or whose
//!   request line grows past `server.max_request_line_bytes` — is dropped,
//!   and hyper gets a stand-in request instead that the service answers with
//!   431 (or 414) and `Connection: close`, in order after the requests
//!   before it ([`Oversized`] in its extensions).
//! * **Both framing headers.** hyper frames such a request by
//!   `Transfer-Encoding` alone and drops the `Content-Length` before any code
//!   of ours sees it; today's edge (nginx ≥ 1.21.1) refuses it with 400, and
//!   so do we ([`AmbiguousFraming`] in its extensions).
//! * **Silent connections.** While no request is in flight the connection's
//!   [`ConnActivity`](crate::activity::ConnActivity) names a deadline (the
//!   header timeout for the first request, counted from accept; the idle
//!   timeout after that); [`WatchedIo`] fails the read when it passes, and
//!   hyper closes the connection. This covers HTTP/2 too, whose bytes the
//!   scanner doesn't follow.
//!
//! * **Upgrades.** After a request that asks to switch protocols (`Upgrade`,
//!   or `CONNECT`) and its body, the scanner can't tell whether the next
//!   bytes are the new protocol's or the next request's until the request is
//!   answered: it holds them back (at most `server.max_head_bytes`, then it
//!   stops reading) until [`ConnActivity`](crate::activity::ConnActivity)
//!   knows the answer. A switch (101) turns it off for good; any other answer
//!   and it scans the held bytes as request heads, so a request smuggled
//!   behind a refused upgrade is refused like any other.
//!
//! The scanner never decides framing on its own: whatever it can't follow
//! (a head hyper will refuse anyway, an HTTP/2 preface, a switched protocol)
//! switches it off for the rest of the connection and hyper's own rules
//! apply. It sees bytes before hyper can parse them, so a verdict is always
//! recorded before the request it concerns reaches the service.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::activity::ConnActivity;

/// The most header fields a head may have for the scanner to follow it
/// (hyper refuses more than 100).
const MAX_HEADERS: usize = 128;

/// What hyper is handed in place of an oversized head: a request the
/// service refuses at once ([`Oversized`]).
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nHost: refused.invalid\r\n\r\n";

/// Marks a request whose head carried both `Content-Length` and
/// `Transfer-Encoding`; [`Proxy::handle`](crate::proxy::Proxy::handle)
/// answers it 400 and closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct AmbiguousFraming;

/// Marks the stand-in for a head that grew past its limit; the service
/// answers 414 (`request_line`: the request line alone was too long) or 431,
/// and closes the connection.
#[derive(Debug, Clone, Copy)]
pub struct Oversized {
    /// Whether the request line alone passed its limit.
    pub request_line: bool,
}

/// The size limits of a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The whole head (request line, header fields, line ends), bytes.
    pub head: usize,
    /// The request line, bytes.
    pub request_line: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits {
            head: 32 * 1024,
            request_line: 8 * 1024,
        }
    }
}

/// What a connection's [`Scanner`] found, shared with the service that
/// answers the connection's requests in order.
#[derive(Debug)]
pub struct FramingVerdicts {
    /// Index (from 0) of the first request with both framing headers;
    /// `u64::MAX` while there is none.
    ambiguous: AtomicU64,
    /// Index of the stand-in for an oversized head; `u64::MAX`: none.
    oversized: AtomicU64,
    /// Whether the oversized head's request line was the part too long.
    oversized_line: std::sync::atomic::AtomicBool,
    /// How many requests the service has been handed so far.
    served: AtomicU64,
}

impl Default for FramingVerdicts {
    fn default() -> Self {
        FramingVerdicts {
            ambiguous: AtomicU64::new(u64::MAX),
            oversized: AtomicU64::new(u64::MAX),
            oversized_line: Default::default(),
            served: AtomicU64::new(0),
        }
    }
}

/// What the scanner says about the next request the service is handed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing wrong below hyper.
    Fine,
    /// Both framing headers: 400.
    Ambiguous,
    /// The stand-in for an oversized head: 431, or 414 for the request line.
    Oversized {
        /// Whether the request line alone was too long.
        request_line: bool,
    },
}

impl FramingVerdicts {
    /// Called once per request, in the order hyper hands them over: what
    /// the scanner found about this request.
    pub fn next(&self) -> Verdict {
        let index = self.served.fetch_add(1, Ordering::AcqRel);
        if self.ambiguous.load(Ordering::Acquire) == index {
            Verdict::Ambiguous
        } else if self.oversized.load(Ordering::Acquire) == index {
            Verdict::Oversized {
                request_line: self.oversized_line.load(Ordering::Acquire),
            }
        } else {
            Verdict::Fine
        }
    }

    fn record_ambiguous(&self, index: u64) {
        // Only the first one counts: hyper closes the connection after it.
        let _ =
            self.ambiguous
                .compare_exchange(u64::MAX, index, Ordering::AcqRel, Ordering::Acquire);
    }

    fn record_oversized(&self, index: u64, request_line: bool) {
        self.oversized_line.store(request_line, Ordering::Release);
        self.oversized.store(index, Ordering::Release);
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
    /// An oversized head was refused: nothing more is read.
    Refused,
}

/// What the scanner reports about one piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Fed {
    /// How many trailing bytes of the input are an incomplete head, to be
    /// held back from hyper until it completes.
    pub held: usize,
    /// The index of a request whose head carried both framing headers.
    pub ambiguous: Option<u64>,
    /// An oversized head: its index and whether the request line was the
    /// part too long. The scanner is [`Scanner::is_refused`] afterwards.
    pub oversized: Option<(u64, bool)>,
}

/// Where the scanner is inside the current, incomplete head.
#[derive(Debug, Clone, Copy, Default)]
struct HeadProgress {
    /// Bytes of the head so far (leading empty lines included).
    len: usize,
    /// Whether the request line is complete.
    line_done: bool,
    /// Bytes of the current line so far, line end not counted.
    line_len: usize,
}

/// Follows one connection's request heads and body framing.
#[derive(Debug)]
pub struct Scanner {
    /// Where in the stream the next byte falls.
    state: State,
    /// Inside the current head.
    head: HeadProgress,
    /// Request heads seen so far.
    requests: u64,
    /// Head size limits.
    limits: HeadLimits,
    /// The index of a request that asked to switch protocols and whose
    /// answer isn't known yet; the bytes after it (and its body) are held.
    upgrade_asked: Option<u64>,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner::new(HeadLimits::default())
    }
}

impl Scanner {
    /// A scanner at the start of a connection.
    pub fn new(limits: HeadLimits) -> Self {
        Scanner {
            state: State::Head,
            head: HeadProgress::default(),
            requests: 0,
            limits,
            upgrade_asked: None,
        }
    }

    /// The index of a request that asked to switch protocols and whose
    /// answer the scanner waits for ([`Scanner::upgrade_answered`]).
    pub fn upgrade_asked(&self) -> Option<u64> {
        self.upgrade_asked
    }

    /// Whether the scanner holds every byte back until the answer to
    /// [`Scanner::upgrade_asked`] is known: the request and its body are
    /// through, and what follows may be either protocol.
    pub fn is_awaiting_upgrade(&self) -> bool {
        self.upgrade_asked.is_some() && self.state == State::Head
    }

    /// The request of [`Scanner::upgrade_asked`] was answered: `switched`
    /// (101) turns the scanner off for good; otherwise it goes on reading
    /// request heads, starting with the bytes it held back.
    pub fn upgrade_answered(&mut self, switched: bool) {
        self.upgrade_asked = None;
        if switched {
            self.state = State::Off;
        }
    }

    /// Whether the scanner still follows the stream.
    pub fn is_following(&self) -> bool {
        !matches!(self.state, State::Off | State::Refused)
    }

    /// Whether an oversized head was refused.
    pub fn is_refused(&self) -> bool {
        self.state == State::Refused
    }

    /// Feeds the next bytes the client sent: `window[from..]` is new,
    /// `window[..from]` is the incomplete head held back from the previous
    /// call (already scanned).
    pub fn feed(&mut self, window: &[u8], from: usize) -> Fed {
        let mut fed = Fed::default();
        let mut head_start = (from > 0).then_some(0);
        let mut pos = from;
        while pos < window.len() {
            match self.state {
                State::Off | State::Refused => return fed,
                State::Head if self.upgrade_asked.is_some() => {
                    // Either protocol may follow: hold it all until the
                    // upgrade is answered.
                    let start = *head_start.get_or_insert(pos);
                    fed.held = window.len() - start;
                    return fed;
                }
                State::Head => {
                    let start = *head_start.get_or_insert(pos);
                    match self.head_end(&window[pos..]) {
                        HeadEnd::Complete(n) => {
                            let end = pos + n;
                            let ambiguous = self.parse(&window[start..end]);
                            fed.ambiguous = fed.ambiguous.or(ambiguous);
                            head_start = None;
                            pos = end;
                        }
                        HeadEnd::Partial => {
                            fed.held = window.len() - start;
                            return fed;
                        }
                        HeadEnd::TooLong { request_line } => {
                            self.state = State::Refused;
                            fed.held = window.len() - start;
                            fed.oversized = Some((self.requests, request_line));
                            return fed;
                        }
                    }
                }
                State::Fixed(left) | State::ChunkData(left) => {
                    let n = left.min((window.len() - pos) as u64);
                    pos += n as usize;
                    self.state = match (self.state, left - n) {
                        (State::Fixed(_), 0) => State::Head,
                        (State::Fixed(_), rest) => State::Fixed(rest),
                        (_, 0) => State::ChunkDataCr,
                        (_, rest) => State::ChunkData(rest),
                    };
                }
                _ => {
                    self.state = self.chunk_byte(window[pos]);
                    pos += 1;
                }
            }
        }
        fed
    }

    /// Looks for the end of the current head in `data` (which continues
    /// it), one byte at a time, and checks the limits.
    fn head_end(&mut self, data: &[u8]) -> HeadEnd {
        let h = &mut self.head;
        for (i, &b) in data.iter().enumerate() {
            h.len += 1;
            match b {
                b'\n' if h.line_len == 0 => {
                    if h.line_done {
                        self.head = HeadProgress::default();
                        return HeadEnd::Complete(i + 1);
                    }
                    // Empty lines before the request line are skipped (by
                    // hyper too).
                }
                b'\n' => {
                    h.line_done = true;
                    h.line_len = 0;
                }
                b'\r' => {}
                _ => h.line_len += 1,
            }
            if !h.line_done && h.line_len > self.limits.request_line {
                return HeadEnd::TooLong { request_line: true };
            }
            if h.len > self.limits.head {
                return HeadEnd::TooLong {
                    request_line: false,
                };
            }
        }
        HeadEnd::Partial
    }

    /// Parses a complete head and sets the framing of what follows; returns
    /// its index if it carried both framing headers.
    fn parse(&mut self, head: &[u8]) -> Option<u64> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let (framing, upgrade) = match req.parse(head) {
            Ok(httparse::Status::Complete(len)) if len == head.len() => Framing::of(&req),
            // A head hyper refuses, or one we read differently: hands off.
            _ => (Framing::Unknown, false),
        };
        let index = self.requests;
        self.requests += 1;
        self.state = match framing {
            Framing::Ambiguous | Framing::Unknown => State::Off,
            Framing::Chunked => State::ChunkSize(0, 0),
            Framing::Length(0) => State::Head,
            Framing::Length(n) => State::Fixed(n),
        };
        if upgrade && self.state != State::Off {
            self.upgrade_asked = Some(index);
        }
        (framing == Framing::Ambiguous).then_some(index)
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
}

/// Where a head ends.
enum HeadEnd {
    /// After this many more bytes.
    Complete(usize),
    /// Not in these bytes.
    Partial,
    /// It passed a limit.
    TooLong {
        /// The request line's limit (else the whole head's).
        request_line: bool,
    },
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
    /// length, a final coding other than chunked.
    Unknown,
}

impl Framing {
    /// The framing of a request's body, and whether the request asks to
    /// switch protocols afterwards (an `Upgrade` field or `CONNECT`).
    fn of(req: &httparse::Request<'_, '_>) -> (Framing, bool) {
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
        let framing = match (has_length, has_te, length) {
            (true, true, _) => Framing::Ambiguous,
            (_, true, _) if chunked_last => Framing::Chunked,
            (_, true, _) => Framing::Unknown,
            (_, _, Some(u64::MAX)) => Framing::Unknown,
            (_, _, n) => Framing::Length(n.unwrap_or(0)),
        };
        (framing, upgrade)
    }
}

/// A client connection whose incoming bytes pass through a [`Scanner`]
/// on their way to hyper, and whose reads fail once the connection has been
/// idle past its deadline; writes go straight through.
#[derive(Debug)]
pub struct WatchedIo<S> {
    /// The connection (TCP, or TLS after decryption).
    inner: S,
    /// Follows the request stream.
    scanner: Scanner,
    /// Shared with the connection's service.
    verdicts: Arc<FramingVerdicts>,
    /// Requests in flight and the idle deadline, shared with the service.
    activity: Arc<ConnActivity>,
    /// Bytes read and scanned but not handed to hyper yet: an incomplete
    /// head, or (its first `released` bytes) what hyper may have now.
    held: Vec<u8>,
    /// How many bytes at the front of `held` hyper may have.
    released: usize,
    /// The idle deadline's timer, while there is one.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> WatchedIo<S> {
    /// Watches `inner`, reporting to `verdicts` and `activity`.
    pub fn new(
        inner: S,
        limits: HeadLimits,
        verdicts: Arc<FramingVerdicts>,
        activity: Arc<ConnActivity>,
    ) -> Self {
        WatchedIo {
            inner,
            scanner: Scanner::new(limits),
            verdicts,
            activity,
            held: Vec::new(),
            released: 0,
            timer: None,
        }
    }

    /// Records what the scanner found.
    fn report(&mut self, fed: Fed) {
        if let Some(index) = fed.ambiguous {
            self.verdicts.record_ambiguous(index);
        }
        if let Some((index, request_line)) = fed.oversized {
            self.verdicts.record_oversized(index, request_line);
        }
    }

    /// Scans `held[from..]` (behind `held[..from]`, an incomplete head
    /// already scanned) and releases to hyper what is complete; an oversized
    /// head is replaced by the stand-in, after the requests before it.
    fn scan_held(&mut self, from: usize) {
        let fed = self.scanner.feed(&self.held, from);
        let complete = self.held.len() - fed.held;
        if fed.oversized.is_some() {
            self.held.truncate(complete);
            self.held.extend_from_slice(STAND_IN);
            self.released = self.held.len();
        } else {
            self.released = complete;
        }
        self.report(fed);
    }

    /// Ready with an error once the connection has been idle past its
    /// deadline.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        self.activity.register(cx.waker());
        let Some(deadline) = self.activity.deadline() else {
            self.timer = None;
            return Poll::Pending;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "no request within the connection's header or idle timeout",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if this.released > 0 {
                let n = this.released.min(buf.remaining());
                buf.put_slice(&this.held[..n]);
                this.held.drain(..n);
                this.released -= n;
                return Poll::Ready(Ok(()));
            }
            if let Some(index) = this.scanner.upgrade_asked()
                && let Some(switched) = this.activity.upgrade_outcome(index)
            {
                this.scanner.upgrade_answered(switched);
                if switched {
                    // The held bytes are the new protocol's.
                    this.released = this.held.len();
                } else if !this.held.is_empty() && this.scanner.is_following() {
                    this.scan_held(0);
                }
                continue;
            }
            if this.scanner.is_awaiting_upgrade() && this.held.len() >= this.scanner.limits.head {
                // Enough held until the upgrade is answered; the answer
                // wakes the reader.
                return match this.poll_deadline(cx) {
                    Poll::Ready(e) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                };
            }
            if this.scanner.is_refused() {
                // The stand-in's answer closes the connection. Until then
                // the client's bytes are read and dropped, so that closing
                // with unread input doesn't reset the connection before the
                // client has read the answer.
                let before = buf.filled().len();
                let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
                let got = buf.filled().len() - before;
                buf.set_filled(before);
                match polled {
                    Poll::Ready(Ok(())) if got > 0 => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    _ => {}
                }
                return match this.poll_deadline(cx) {
                    Poll::Ready(e) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                };
            }
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Pending => {
                    return match this.poll_deadline(cx) {
                        Poll::Ready(e) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let after = buf.filled().len();
            if after == before {
                if this.scanner.is_awaiting_upgrade() && !this.held.is_empty() {
                    // The client is done sending, but what it sent behind
                    // the upgrade is still owed its reading once the
                    // upgrade is answered (which wakes the reader).
                    return match this.poll_deadline(cx) {
                        Poll::Ready(e) => Poll::Ready(Err(e)),
                        Poll::Pending => Poll::Pending,
                    };
                }
                // End of stream; an incomplete head held back is dropped.
                this.held.clear();
                return Poll::Ready(Ok(()));
            }
            if !this.scanner.is_following() && this.held.is_empty() {
                return Poll::Ready(Ok(()));
            }
            if this.held.is_empty() {
                let fed = this.scanner.feed(&buf.filled()[before..], 0);
                if fed.held > 0 {
                    if fed.oversized.is_none() {
                        this.held
                            .extend_from_slice(&buf.filled()[after - fed.held..]);
                    }
                    buf.set_filled(after - fed.held);
                }
                if fed.oversized.is_some() {
                    this.held = STAND_IN.to_vec();
                    this.released = STAND_IN.len();
                }
                this.report(fed);
                if buf.filled().len() > before {
                    return Poll::Ready(Ok(()));
                }
            } else {
                let from = this.held.len();
                this.held.extend_from_slice(&buf.filled()[before..]);
                buf.set_filled(before);
                this.scan_held(from);
            }
        }
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

    /// Feeds `stream` in pieces of `step` bytes the way [`WatchedIo`] does
    /// (holding incomplete heads back); returns the ambiguous index found,
    /// the bytes released to hyper and the scanner.
    fn scan_with(
        stream: &[u8],
        step: usize,
        limits: HeadLimits,
    ) -> (Option<u64>, Vec<u8>, Scanner) {
        let mut s = Scanner::new(limits);
        let mut found = None;
        let mut held: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in stream.chunks(step) {
            if s.is_refused() {
                break;
            }
            if held.is_empty() {
                let fed = s.feed(piece, 0);
                found = found.or(fed.ambiguous);
                out.extend_from_slice(&piece[..piece.len() - fed.held]);
                if fed.oversized.is_none() {
                    held.extend_from_slice(&piece[piece.len() - fed.held..]);
                }
            } else {
                let from = held.len();
                held.extend_from_slice(piece);
                let fed = s.feed(&held, from);
                found = found.or(fed.ambiguous);
                if fed.oversized.is_some() {
                    held.clear();
                } else {
                    let released = held.len() - fed.held;
                    out.extend(held.drain(..released));
                }
            }
        }
        (found, out, s)
    }

    fn scan(stream: &str, step: usize) -> (Option<u64>, Scanner) {
        let (found, _, s) = scan_with(stream.as_bytes(), step, HeadLimits::default());
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
    fn well_framed_streams_are_followed_and_released_whole() {
        let stream = "\r\nPOST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
             POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\n\
             GET /c HTTP/1.1\nHost: a\n\n";
        for step in 1..=stream.len() {
            let (found, out, s) = scan_with(stream.as_bytes(), step, HeadLimits::default());
            assert_eq!(found, None);
            assert!(s.is_following());
            assert_eq!(s.requests, 3);
            assert_eq!(s.state, State::Head);
            assert_eq!(out, stream.as_bytes(), "step {step}");
        }
        // An unfinished head is held back, nothing of it released.
        let (_, out, _) = scan_with(b"GET / HTTP/1.1\r\nHost: a\r\n", 3, HeadLimits::default());
        assert!(out.is_empty());
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
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff1\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "\x16\x03\x01garbage\r\n\r\n",
        ] {
            let (found, s) = scan(stream, 3);
            assert_eq!(found, None, "{stream:?}");
            assert!(!s.is_following(), "{stream:?}");
        }
    }

    #[test]
    fn what_follows_an_upgrade_waits_for_its_answer() {
        let smuggled =
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        for asking in [
            "GET / HTTP/1.1\r\n\r\nGET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "POST /ws HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 3\r\n\r\nabc",
            "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        ] {
            let asked = u64::from(asking.starts_with("GET / "));
            for switched in [false, true] {
                let mut s = Scanner::default();
                let stream = format!("{asking}{smuggled}");
                // The asking request (and its body) passes; all behind it
                // is held, however it arrives.
                let fed = s.feed(stream.as_bytes(), 0);
                assert_eq!(fed.held, smuggled.len(), "{asking:?}");
                assert_eq!(fed.ambiguous, None);
                assert_eq!(s.upgrade_asked(), Some(asked));
                assert!(s.is_awaiting_upgrade());
                let fed = s.feed(&stream.as_bytes()[asking.len()..], 3);
                assert_eq!(fed.held, smuggled.len());
                s.upgrade_answered(switched);
                assert_eq!(s.upgrade_asked(), None);
                let fed = s.feed(&stream.as_bytes()[asking.len()..], 0);
                if switched {
                    // The new protocol's bytes: not read as requests.
                    assert!(!s.is_following());
                    assert_eq!(fed.ambiguous, None);
                } else {
                    // Refused: the next request is read like any other.
                    assert_eq!(fed.ambiguous, Some(asked + 1), "{asking:?}");
                }
            }
        }
        // Until its body is through, an upgrade request's bytes flow.
        let mut s = Scanner::default();
        let fed = s.feed(
            b"POST /ws HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 10\r\n\r\nabc",
            0,
        );
        assert_eq!(fed.held, 0);
        assert!(!s.is_awaiting_upgrade());
        // An upgrade request hyper will refuse switches the scanner off.
        let mut s = Scanner::default();
        s.feed(
            b"GET / HTTP/1.1\r\nUpgrade: x\r\nTransfer-Encoding: gzip\r\n\r\n",
            0,
        );
        assert!(!s.is_following());
        assert_eq!(s.upgrade_asked(), None);
    }

    #[test]
    fn oversized_heads_are_refused_at_the_limit() {
        let limits = HeadLimits {
            head: 100,
            request_line: 40,
        };
        let long_line = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(50));
        let mut s = Scanner::new(limits);
        let fed = s.feed(long_line.as_bytes(), 0);
        assert_eq!(fed.oversized, Some((0, true)));
        assert!(s.is_refused());
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(100));
        for step in [1, 7, big.len()] {
            let (_, out, s) = scan_with(big.as_bytes(), step, limits);
            assert!(s.is_refused());
            assert!(out.is_empty());
        }
        // After a well-formed request, the next one is the refused one.
        let two = format!("GET / HTTP/1.1\r\n\r\n{big}");
        let mut s = Scanner::new(limits);
        let fed = s.feed(two.as_bytes(), 0);
        assert_eq!(fed.oversized, Some((1, false)));
    }

    #[test]
    fn a_trickled_head_is_scanned_once() {
        // Linear: feeding a 30 KiB head one byte at a time parses it once.
        let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "c".repeat(30_000));
        let (_, out, s) = scan_with(head.as_bytes(), 1, HeadLimits::default());
        assert_eq!(s.requests, 1);
        assert_eq!(out.len(), head.len());
    }

    /// A connection that yields the given pieces one read at a time, then
    /// nothing (pending) or, with `eof`, the end of the stream.
    struct Pieces {
        pieces: std::collections::VecDeque<Vec<u8>>,
        eof: bool,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            match self.pieces.pop_front() {
                Some(p) => {
                    buf.put_slice(&p);
                    Poll::Ready(Ok(()))
                }
                None if self.eof => Poll::Ready(Ok(())),
                None => Poll::Pending,
            }
        }
    }

    fn watched(
        pieces: &[&[u8]],
        eof: bool,
        limits: HeadLimits,
    ) -> (WatchedIo<Pieces>, Arc<FramingVerdicts>, Arc<ConnActivity>) {
        let verdicts = Arc::new(FramingVerdicts::default());
        let activity = Arc::new(ConnActivity::new(
            tokio::time::Instant::now(),
            std::time::Duration::from_secs(600),
            std::time::Duration::from_secs(600),
        ));
        let io = WatchedIo::new(
            Pieces {
                pieces: pieces.iter().map(|p| p.to_vec()).collect(),
                eof,
            },
            limits,
            verdicts.clone(),
            activity.clone(),
        );
        (io, verdicts, activity)
    }

    /// Reads what hyper would get now, without waiting.
    fn read_now(io: &mut WatchedIo<Pieces>) -> Option<Vec<u8>> {
        use futures::FutureExt as _;
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 4096];
        let n = io.read(&mut buf).now_or_never()?.unwrap();
        buf.truncate(n);
        Some(buf)
    }

    #[tokio::test]
    async fn bytes_behind_an_upgrade_reach_hyper_once_it_is_answered() {
        let asking: &[u8] =
            b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        let smuggled: &[u8] =
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        let both = [asking, smuggled].concat();
        for (switched, eof) in [(false, false), (false, true), (true, false), (true, true)] {
            let (mut io, verdicts, activity) = watched(&[&both], eof, HeadLimits::default());
            assert_eq!(read_now(&mut io).unwrap(), asking);
            // Unanswered: nothing more for hyper, not even the end of the
            // stream.
            let in_flight = activity.start();
            assert_eq!(read_now(&mut io), None);
            assert_eq!(verdicts.next(), Verdict::Fine);
            if switched {
                activity.upgraded();
            }
            drop(in_flight);
            assert_eq!(read_now(&mut io).unwrap(), smuggled);
            let expected = if switched {
                Verdict::Fine
            } else {
                Verdict::Ambiguous
            };
            assert_eq!(verdicts.next(), expected, "switched: {switched}");
            if eof {
                assert_eq!(read_now(&mut io).unwrap(), b"");
            }
        }
    }

    #[tokio::test]
    async fn what_waits_for_an_upgrade_is_bounded() {
        let limits = HeadLimits {
            head: 100,
            request_line: 50,
        };
        let asking: &[u8] = b"GET / HTTP/1.1\r\nUpgrade: x\r\n\r\n";
        let piece = [b'z'; 80];
        let (mut io, _, activity) = watched(&[asking, &piece, &piece, &piece], false, limits);
        assert_eq!(read_now(&mut io).unwrap(), asking);
        let _in_flight = activity.start();
        assert_eq!(read_now(&mut io), None);
        // Two pieces were read (past the bound), the third never was.
        assert_eq!(io.held.len(), 160);
        assert_eq!(io.inner.pieces.len(), 1);
        activity.upgraded();
        assert_eq!(read_now(&mut io).unwrap().len(), 160);
    }

    #[tokio::test]
    async fn an_oversized_head_completing_a_held_one_keeps_the_requests_before_it() {
        let limits = HeadLimits {
            head: 100,
            request_line: 50,
        };
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(200));
        let second = format!("st: a\r\n\r\n{big}");
        let (mut io, verdicts, _) =
            watched(&[b"GET / HTTP/1.1\r\nHo", second.as_bytes()], false, limits);
        let mut got = Vec::new();
        while let Some(bytes) = read_now(&mut io) {
            got.extend_from_slice(&bytes);
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\n\r\n{}",
                String::from_utf8_lossy(STAND_IN)
            )
        );
        assert_eq!(verdicts.next(), Verdict::Fine);
        assert_eq!(
            verdicts.next(),
            Verdict::Oversized {
                request_line: false
            }
        );
    }

    #[test]
    fn verdicts_name_the_request_in_service_order() {
        let v = FramingVerdicts::default();
        v.record_ambiguous(1);
        v.record_ambiguous(2);
        v.record_oversized(2, true);
        assert_eq!(v.next(), Verdict::Fine);
        assert_eq!(v.next(), Verdict::Ambiguous);
        assert_eq!(v.next(), Verdict::Oversized { request_line: true });
    }
}
