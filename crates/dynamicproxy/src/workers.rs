//! Per-core serving: client connections are served by `server.workers`
//! OS threads, each running its own single-threaded tokio runtime, instead
//! of one work-stealing runtime.
//!
//! Why: a proxied request is a hand-off between two tasks — the client
//! connection and the pooled backend connection. On a work-stealing runtime
//! the two often sit on different threads, so every request pays cross-thread
//! wake-ups (futex calls, context switches); on this workload that cost about
//! a third more CPU per request than a single-threaded runtime (see
//! `docs/benchmarks.md`). Here a worker keeps everything a connection touches
//! on its own thread: the connection, its own backend pool
//! ([`Proxy::with_own_pool`]), its timers. Routes, settings, the rate-limit
//! state and metrics stay shared.
//!
//! Each listener has one acceptor task, on the caller's runtime (with route
//! sync, the admin endpoint and reloads). It takes a `server.max_connections`
//! permit, accepts, and hands the connection to the worker with the fewest
//! open connections. Letting every worker accept from the shared socket
//! instead left the balance to whichever thread woke first: in measurements
//! one worker often took nearly all of a benchmark's connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use forge_core::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::ServerSettings;
use crate::proxy::{self, Proxy};

/// A client connection accepted by a listener's acceptor, on its way to a
/// worker.
#[derive(Debug)]
pub struct Accepted {
    /// The connection, not registered with any runtime yet.
    pub stream: std::net::TcpStream,
    /// The client.
    pub peer: SocketAddr,
    /// Held by the connection's task until it ends.
    pub ticket: Ticket,
}

/// What an open connection holds: its `server.max_connections` permit and
/// its place in its worker's count, both given back on drop.
#[derive(Debug)]
pub struct Ticket {
    /// The listener's permit.
    _slot: OwnedSemaphorePermit,
    /// The worker's open-connection count, decremented on drop.
    open: Arc<AtomicUsize>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A worker as an acceptor sees it.
#[derive(Debug, Clone)]
struct WorkerInbox {
    /// Where accepted connections go.
    sender: UnboundedSender<Accepted>,
    /// Connections open on this worker, over all listeners.
    open: Arc<AtomicUsize>,
}

/// Serves `http` (and `https` with its acceptor) on `server.worker_count()`
/// threads until `shutdown`, each draining its own connections within
/// `server.drain_timeout_ms`; returns when every worker has stopped.
pub async fn serve(
    http: TcpListener,
    https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    proxy: Proxy,
    server: ServerSettings,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let mut listeners = vec![(http, None)];
    if let Some((listener, acceptor)) = https {
        listeners.push((listener, Some(acceptor)));
    }
    let count = server.worker_count();
    // Per listener, per worker: the channel into that worker.
    let mut inboxes: Vec<Vec<WorkerInbox>> = vec![Vec::with_capacity(count); listeners.len()];
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<std::io::Result<()>>(count);
    for index in 0..count {
        let open = Arc::new(AtomicUsize::new(0));
        let mut jobs = Vec::with_capacity(listeners.len());
        for (l, (listener, tls)) in listeners.iter().enumerate() {
            let (sender, receiver) = unbounded_channel();
            inboxes[l].push(WorkerInbox {
                sender,
                open: open.clone(),
            });
            let port = listener.local_addr()?.port();
            jobs.push((receiver, port, tls.clone()));
        }
        let proxy = if index == 0 {
            proxy.clone()
        } else {
            proxy.with_own_pool()
        };
        let server = server.clone();
        let shutdown = shutdown.clone();
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("dynamicproxy-worker-{index}"))
            .spawn(move || {
                let result = run_worker(jobs, proxy, server, shutdown.clone());
                if result.is_err() {
                    // One worker down means a proxy serving at reduced
                    // capacity without saying so: stop the whole proxy.
                    shutdown.trigger();
                }
                let _ = done.blocking_send(result);
            })?;
    }
    drop(done_tx);
    let mut acceptors = tokio::task::JoinSet::new();
    for ((listener, _), inboxes) in listeners.into_iter().zip(inboxes) {
        let slots = Arc::new(Semaphore::new(server.max_connections.max(1)));
        acceptors.spawn(accept(listener, slots, inboxes, shutdown.clone()));
    }
    let mut first_error = Ok(());
    while let Some(result) = done_rx.recv().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "a worker thread failed");
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    }
    while acceptors.join_next().await.is_some() {}
    first_error
}

/// Accepts on `listener` until shutdown, each connection with a permit from
/// `slots` (past `server.max_connections`, new connections wait in the
/// kernel's listen backlog), and hands it to the least-loaded worker.
async fn accept(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    workers: Vec<WorkerInbox>,
    shutdown: Shutdown,
) {
    let mut next = 0usize;
    loop {
        let Some((slot, stream, peer)) =
            forge_core::lifecycle::accept_capped(&listener, &slots, &shutdown).await
        else {
            break;
        };
        let _ = stream.set_nodelay(true);
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "can't hand over an accepted connection");
                continue;
            }
        };
        // The fewest open connections; ties rotate, so an idle proxy
        // spreads its first connections too.
        let Some(worker) = (0..workers.len())
            .map(|i| &workers[(next + i) % workers.len()])
            .min_by_key(|w| w.open.load(Ordering::Relaxed))
        else {
            break;
        };
        next = next.wrapping_add(1);
        worker.open.fetch_add(1, Ordering::Relaxed);
        let accepted = Accepted {
            stream,
            peer,
            ticket: Ticket {
                _slot: slot,
                open: worker.open.clone(),
            },
        };
        if worker.sender.send(accepted).is_err() {
            // The worker has stopped (shutdown): so do we.
            break;
        }
    }
}

/// One worker: a single-threaded runtime serving what each listener's
/// acceptor hands it.
fn run_worker(
    jobs: Vec<(
        tokio::sync::mpsc::UnboundedReceiver<Accepted>,
        u16,
        Option<tokio_rustls::TlsAcceptor>,
    )>,
    proxy: Proxy,
    server: ServerSettings,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut serving = tokio::task::JoinSet::new();
        for (incoming, port, tls) in jobs {
            serving.spawn(proxy::serve_connections(
                incoming,
                port,
                proxy.clone(),
                server.clone(),
                tls,
                shutdown.clone(),
            ));
        }
        while serving.join_next().await.is_some() {}
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The next handed-over connection, failing after 5 s.
    async fn within(next: impl std::future::Future<Output = Option<Accepted>>) -> Accepted {
        tokio::time::timeout(std::time::Duration::from_secs(5), next)
            .await
            .expect("no connection handed over")
            .unwrap()
    }

    #[tokio::test]
    async fn connections_go_to_the_least_loaded_worker() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (a_tx, mut a_rx) = unbounded_channel();
        let (b_tx, mut b_rx) = unbounded_channel();
        let a_open = Arc::new(AtomicUsize::new(0));
        // Worker b already has three connections open (on another listener).
        let b_open = Arc::new(AtomicUsize::new(3));
        let workers = vec![
            WorkerInbox {
                sender: a_tx,
                open: a_open.clone(),
            },
            WorkerInbox {
                sender: b_tx,
                open: b_open.clone(),
            },
        ];
        let shutdown = Shutdown::new();
        let slots = Arc::new(Semaphore::new(100));
        let acceptor = tokio::spawn(accept(listener, slots.clone(), workers, shutdown.clone()));
        let mut clients = Vec::new();
        for _ in 0..7 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(within(a_rx.recv()).await);
        }
        for _ in 0..2 {
            held.push(within(b_rx.recv()).await);
        }
        // 3 + 7 spread to five each; each holds a permit (and the acceptor
        // one more, taken before waiting for the next connection).
        assert_eq!(a_open.load(Ordering::Relaxed), 5);
        assert_eq!(b_open.load(Ordering::Relaxed), 5);
        assert_eq!(slots.available_permits(), 92);
        // A connection's end gives both back.
        held.pop();
        assert_eq!(
            a_open.load(Ordering::Relaxed) + b_open.load(Ordering::Relaxed),
            9
        );
        assert_eq!(slots.available_permits(), 93);
        shutdown.trigger();
        acceptor.await.unwrap();
    }
}
