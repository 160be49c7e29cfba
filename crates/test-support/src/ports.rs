//! Free loopback ports, and waiting for a port to accept connections.
//!
//! Every test server listens on its own port on 127.0.0.1, so tests can run in parallel with
//! each other and with whatever else runs on the machine. A port is "free" when we can bind it;
//! between our check and the server's own bind there is a window in which someone else could
//! take it, which this module narrows in two ways:
//!
//! * ports are drawn at random from `20000..32000`, *below* Linux's ephemeral range
//!   (32768–60999), so outgoing connections — which the kernel gives ephemeral ports — never
//!   take them (asking the kernel for port 0 would hand out exactly those ephemeral ports);
//! * a port is never handed out twice by the same process.
//!
//! The servers' start-up code additionally retries on a fresh port when a start fails.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::error::{Result, TestSupportError};

/// The range random ports are drawn from (below Linux's default ephemeral range).
const PORT_RANGE: std::ops::Range<u16> = 20000..32000;

/// Ports this process has already handed out.
fn handed_out() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A random number, good enough to spread ports (std's hasher is randomly keyed).
fn random_u64() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}

/// Whether `port` can be bound on 127.0.0.1 right now.
fn can_bind(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// Returns a TCP port on 127.0.0.1 that is free now and that this process has not handed out
/// before.
///
/// Falls back to a kernel-chosen port (binding 127.0.0.1:0) in the unlikely case that no random
/// candidate is free.
pub fn free_port() -> u16 {
    let mut taken = handed_out()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    for _ in 0..200 {
        // The remainder is below `span`, which fits in a u16.
        let offset = u16::try_from(random_u64() % span).unwrap_or(0);
        let port = PORT_RANGE.start + offset;
        if !taken.contains(&port) && can_bind(port) {
            taken.insert(port);
            return port;
        }
    }
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap_or(0);
        if port != 0 && taken.insert(port) {
            return port;
        }
    }
}

/// The loopback socket address of `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Waits until something accepts TCP connections on `addr`, trying every 20 ms.
///
/// # Errors
///
/// [`TestSupportError::PortTimeout`] when nothing accepted a connection within `timeout`.
pub async fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(addr),
        )
        .await;
        if let Ok(Ok(_stream)) = attempt {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TestSupportError::PortTimeout { addr, timeout });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        assert!(TcpListener::bind(loopback(a)).is_ok());
    }

    #[tokio::test]
    async fn waits_for_a_listener() {
        let listener = tokio::net::TcpListener::bind(loopback(free_port()))
            .await
            .unwrap();
        wait_for_port(listener.local_addr().unwrap(), Duration::from_secs(1))
            .await
            .unwrap();
        // A port nothing listens on: the wait ends in PortTimeout.
        let unused = loopback(free_port());
        let err = wait_for_port(unused, Duration::from_millis(100)).await;
        assert!(matches!(err, Err(TestSupportError::PortTimeout { .. })));
    }
}
