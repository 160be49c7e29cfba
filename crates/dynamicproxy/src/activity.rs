//! When a client connection may be closed for sending nothing.
//!
//! A connection that has no request in flight must complete its next request
//! within a deadline: `server.header_read_timeout_ms` from accept for the
//! first request (the TLS handshake and, for HTTP/2, the preface count
//! against it), `server.idle_timeout_ms` from the end of the last response
//! after that (an idle keep-alive or HTTP/2 connection). Without this, a
//! listener's `server.max_connections` could be filled with sockets that
//! never send a byte.
//!
//! [`ConnActivity`] is shared by a connection's service, which counts the
//! requests it is handed and finishes them when their response body is
//! done ([`RequestInFlight`]), and its [`WatchedIo`](crate::framing::WatchedIo),
//! which fails the connection's read when the deadline passes — reads are
//! pending whenever hyper waits for a client, HTTP/1 and HTTP/2 alike.
//! Upgraded (WebSocket) connections have their own idle timeout and none
//! here; whether a request that asked to switch protocols did
//! ([`ConnActivity::upgrade_outcome`]) tells the scanner how to read the
//! bytes behind it.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use futures::task::AtomicWaker;
use tokio::time::Instant;

/// The activity of one client connection.
#[derive(Debug)]
pub struct ConnActivity {
    /// When the connection was accepted.
    accepted: Instant,
    /// Requests handed to the service.
    started: AtomicU64,
    /// Requests whose response is done.
    finished: AtomicU64,
    /// Milliseconds after `accepted` when the last response was done.
    idle_since_ms: AtomicU64,
    /// Whether the connection was upgraded (101).
    upgraded: AtomicBool,
    /// The connection's reader, woken when a response is done so it
    /// re-arms its deadline.
    reader: AtomicWaker,
    /// Time to the first complete request.
    header_timeout: Duration,
    /// Time between requests.
    idle_timeout: Duration,
}

impl ConnActivity {
    /// A connection accepted at `accepted`.
    pub fn new(accepted: Instant, header_timeout: Duration, idle_timeout: Duration) -> Self {
        ConnActivity {
            accepted,
            started: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            reader: AtomicWaker::new(),
            header_timeout,
            idle_timeout,
        }
    }

    /// When the connection is to be closed unless a request arrives; `None`
    /// while a request is in flight or after an upgrade.
    pub fn deadline(&self) -> Option<Instant> {
        if self.upgraded.load(Ordering::Acquire) {
            return None;
        }
        let finished = self.finished.load(Ordering::Acquire);
        if self.started.load(Ordering::Acquire) != finished {
            return None;
        }
        let since =
            self.accepted + Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(if finished == 0 {
            self.accepted + self.header_timeout
        } else {
            since + self.idle_timeout
        })
    }

    /// Registers the reader to wake when a response is done.
    pub fn register(&self, waker: &Waker) {
        self.reader.register(waker);
    }

    /// A request was handed to the service; done when the guard drops.
    pub fn start(self: &Arc<Self>) -> RequestInFlight {
        self.started.fetch_add(1, Ordering::AcqRel);
        RequestInFlight(self.clone())
    }

    /// The connection was upgraded: no idle deadline from here on. Called
    /// before the switching response is handed back.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
        self.reader.wake();
    }

    /// Whether the request with index `index` (from 0, in the order the
    /// service was handed them) switched protocols: `None` while its
    /// response isn't done and the connection hasn't switched.
    pub fn upgrade_outcome(&self, index: u64) -> Option<bool> {
        // `finished` first: a switch is recorded before its response is
        // done, so once that response counts as finished the switch shows.
        let finished = self.finished.load(Ordering::Acquire);
        if self.upgraded.load(Ordering::Acquire) {
            Some(true)
        } else {
            (finished > index).then_some(false)
        }
    }
}

/// A request in flight, from the service call until its response body is
/// done (or dropped).
#[derive(Debug)]
pub struct RequestInFlight(Arc<ConnActivity>);

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        let a = &self.0;
        let ms = u64::try_from(a.accepted.elapsed().as_millis()).unwrap_or(u64::MAX);
        a.idle_since_ms.store(ms, Ordering::Release);
        a.finished.fetch_add(1, Ordering::AcqRel);
        a.reader.wake();
    }
}

/// A response body that keeps its request in flight until it is done.
#[derive(Debug)]
pub struct TrackedBody<B> {
    /// The body.
    inner: B,
    /// Dropped with the body.
    _in_flight: RequestInFlight,
}

impl<B> TrackedBody<B> {
    /// `inner`, keeping `in_flight` until it is dropped.
    pub fn new(inner: B, in_flight: RequestInFlight) -> Self {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B> http_body::Body for TrackedBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
