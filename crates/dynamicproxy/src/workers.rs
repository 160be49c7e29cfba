//! Per-core serving: client connections are served by `server.workers`
//! OS threads, each running its own single-threaded tokio runtime, instead
//! of one work-stealing runtime.
//!
//! Why: a proxied request is a hand-off between two tasks — the client
//! connection and the pooled backend connection. On a work-stealing runtime
//! the two often sit on different threads, so every request pays cross-thread
//! wake-ups (futex calls, context switches); on this workload that cost about
//! a third more CPU per request than a single-threaded runtime (see
//! `docs/benchmarks.md`). Here each worker accepts from the same listening
//! sockets and keeps everything a connection touches on its own thread: its
//! connections, its own backend pool ([`Proxy::with_own_pool`]), its timers.
//! Routes, settings, the rate-limit state and metrics stay shared.
//!
//! Route sync, the admin endpoint and reloads keep running on the caller's
//! runtime.

use std::sync::Arc;

use forge_core::Shutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerSettings;
use crate::proxy::{self, Proxy};

/// A listener the workers serve together.
struct SharedListener {
    /// The socket; each worker registers its own clone with its runtime.
    socket: std::net::TcpListener,
    /// Terminates TLS on this listener when set.
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connection permits, shared so `server.max_connections` bounds the
    /// listener as a whole.
    slots: Arc<Semaphore>,
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
    let shared = |listener: TcpListener, tls| -> std::io::Result<SharedListener> {
        Ok(SharedListener {
            socket: listener.into_std()?,
            tls,
            slots: Arc::new(Semaphore::new(server.max_connections.max(1))),
        })
    };
    let mut listeners = vec![shared(http, None)?];
    if let Some((listener, acceptor)) = https {
        listeners.push(shared(listener, Some(acceptor))?);
    }
    let count = server.worker_count();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<std::io::Result<()>>(count);
    for index in 0..count {
        let mut own = Vec::with_capacity(listeners.len());
        for l in &listeners {
            own.push((l.socket.try_clone()?, l.tls.clone(), l.slots.clone()));
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
                let result = run_worker(own, proxy, server, shutdown.clone());
                if result.is_err() {
                    // One worker down means a proxy serving at reduced
                    // capacity without saying so: stop the whole proxy.
                    shutdown.trigger();
                }
                let _ = done.blocking_send(result);
            })?;
    }
    drop(done_tx);
    let mut first_error = Ok(());
    while let Some(result) = done_rx.recv().await {
        if let Err(e) = result {
            tracing::error!(error = %e, "a worker thread failed");
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    }
    first_error
}

/// One worker: a single-threaded runtime serving every listener.
fn run_worker(
    listeners: Vec<(
        std::net::TcpListener,
        Option<tokio_rustls::TlsAcceptor>,
        Arc<Semaphore>,
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
        for (socket, tls, slots) in listeners {
            let listener = TcpListener::from_std(socket)?;
            serving.spawn(proxy::serve(
                listener,
                proxy.clone(),
                server.clone(),
                tls,
                slots,
                shutdown.clone(),
            ));
        }
        while serving.join_next().await.is_some() {}
        Ok(())
    })
}
