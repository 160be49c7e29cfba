//! A TCP relay in front of a Redis server that can cut the server off from
//! its replicas and Sentinels while its clients still reach it.
//!
//! A network partition that isolates a Redis master together with some of
//! its clients is the failure in which an acknowledged write is most easily
//! lost: the Sentinels promote a replica while clients keep writing to the old
//! master. On loopback there is no network to split, so a [`RedisRelay`]
//! stands in for it: the replicas replicate from, the Sentinels monitor, and
//! the clients connect to the relay's port instead of the server's. The relay
//! recognises the connections of replicas (`REPLCONF`, `PSYNC`, `SYNC`) and
//! of Sentinels (`CLIENT SETNAME sentinel-…`) from the commands they send.
//! [`RedisRelay::cut`] then black-holes those links — bytes in either
//! direction are read and dropped, nothing is closed, as when packets stop
//! arriving — while every other connection keeps flowing.
//! [`RedisRelay::heal`] lets them flow again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::error::{Result, TestSupportError};

/// What a client sends that marks its connection as a replica's or a
/// Sentinel's (case-insensitive).
const PEER_MARKERS: [&[u8]; 4] = [b"replconf", b"psync", b"sentinel-", b"\r\nsync\r\n"];

/// How many bytes of the previous chunk are kept to find a marker that
/// straddles two reads.
const MARKER_TAIL: usize = 16;

/// A relay to a Redis server; see the module documentation. Stops relaying
/// (closing every connection) when dropped.
#[derive(Debug)]
pub struct RedisRelay {
    /// The address clients, replicas and Sentinels use.
    addr: SocketAddr,
    /// `true` while replicas and Sentinels are cut off.
    cut: watch::Sender<bool>,
    /// The accept loop (its connections are aborted with it).
    acceptor: JoinHandle<()>,
}

impl RedisRelay {
    /// Relays a free loopback port to `target`.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Result<RedisRelay> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| TestSupportError::io("binding the relay's port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestSupportError::io("reading the relay's port", e))?;
        let (cut, _) = watch::channel(false);
        let cut_rx = cut.subscribe();
        let acceptor = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = cut_rx.clone();
                connections.spawn(relay_connection(inbound, target, cut));
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(RedisRelay {
            addr,
            cut,
            acceptor,
        })
    }

    /// The relay's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Black-holes every replica and Sentinel link (present and future);
    /// client connections keep working.
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Lets replica and Sentinel links flow again (bytes dropped meanwhile
    /// stay lost, so the server and its peers see a broken protocol and
    /// reconnect, as after a real partition).
    pub fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Whether the relay is cutting replica and Sentinel links now.
    pub fn is_cut(&self) -> bool {
        *self.cut.borrow()
    }
}

impl Drop for RedisRelay {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Whether `window` (lower-cased by the caller) holds a peer marker.
fn has_peer_marker(window: &[u8]) -> bool {
    PEER_MARKERS
        .iter()
        .any(|m| window.windows(m.len()).any(|w| w == *m))
}

/// Relays one connection until either side closes; while `cut` is set and
/// the connection is a peer link, bytes in both directions are dropped.
async fn relay_connection(inbound: TcpStream, target: SocketAddr, mut cut: watch::Receiver<bool>) {
    let Ok(outbound) = TcpStream::connect(target).await else {
        return;
    };
    let (mut client_read, mut client_write) = inbound.into_split();
    let (mut server_read, mut server_write) = outbound.into_split();
    let is_peer = Arc::new(AtomicBool::new(false));
    let blocked = {
        let is_peer = Arc::clone(&is_peer);
        move |cut: &watch::Receiver<bool>| *cut.borrow() && is_peer.load(Ordering::SeqCst)
    };
    let mut cut_up = cut.clone();
    let blocked_up = blocked.clone();
    let upstream = async move {
        let mut buf = vec![0_u8; 16 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !is_peer.load(Ordering::SeqCst) {
                tail.extend(buf[..n].iter().map(u8::to_ascii_lowercase));
                if has_peer_marker(&tail) {
                    is_peer.store(true, Ordering::SeqCst);
                }
                let keep = tail.len().saturating_sub(MARKER_TAIL);
                tail.drain(..keep);
            }
            let _ = cut_up.borrow_and_update();
            if blocked_up(&cut_up) {
                continue;
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0_u8; 16 * 1024];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let _ = cut.borrow_and_update();
            if blocked(&cut) {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(upstream, downstream);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_found() {
        assert!(has_peer_marker(
            b"*3\r\n$6\r\nclient\r\n$7\r\nsetname\r\n$20\r\nsentinel-1234abcd-cmd\r\n"
        ));
        assert!(has_peer_marker(b"replconf listening-port 6380"));
        assert!(!has_peer_marker(b"*2\r\n$3\r\nget\r\n$3\r\nkey\r\n"));
    }
}
